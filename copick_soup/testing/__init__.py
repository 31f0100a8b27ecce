"""Local stand-ins of the services copick-soup reads from, for the tests and the benchmarks: nothing in the
package imports this.

- `s3server`: a real S3-compatible server on 127.0.0.1 (moto's, as a child process) and `publish_project`, which
  lays a simulated project out as the CZ cryoET Data Portal serves data.
- `portal_standin`: the portal's GraphQL API behind an HTTPS proxy with a test certificate authority, which
  copick's own `cryoet_data_portal` backend talks to unchanged, and `publish_portal`.

They need the `test` extra (moto, flask, trustme); those are imported inside the functions that use them, so
importing copick_soup never needs it.
"""
