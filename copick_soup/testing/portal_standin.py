"""A local stand-in of the CZ cryoET Data Portal that copick's own `cryoet_data_portal` backend talks to unchanged.

The portal is two services. Its S3 bucket is s3server.py's moto server, found through AWS_ENDPOINT_URL_S3
as copick's backend finds any endpoint. Its GraphQL API is answered here: the portal client's own bundled schema,
executed by graphql-core over in-memory tables, so every query the client builds is validated as the real API
would. The client's URL is a constant (https://graphql.cryoetdataportal.czscience.com/graphql), so the stand-in
is reached as that host: an HTTPS proxy on 127.0.0.1 (HTTPS_PROXY) that terminates TLS with a test certificate
authority (REQUESTS_CA_BUNDLE). Both are environment variables that subprocesses and Ray workers inherit; nothing
is patched in-process.

`publish_portal` lays simulated runs out as datasets 10440/10446 are: runs named like TS_5_4 with numeric IDs
(copick names portal runs by ID), several tomograms per run named from their metadata (`wbp-raw`,
`wbp-filtered-ctfdeconv`, `wbp-denoised-denoiset-ctfdeconv`, ...), ground truth as one OrientedPoint annotation
file per class (copick: user `data-portal`, one session per file), all at `VoxelSpacing10.000`.
Used by the tests and by benchmarks/ray_scaling.py.
"""

from __future__ import annotations

import itertools
import json
import operator
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from copick_soup.data import open_project, read_picks

HOST = "graphql.cryoetdataportal.czscience.com"
BUCKET = "cryoet-data-portal-public"

# A relation named in a where clause -> the table it points into (the record holds its id as `<relation>Id`).
RELATIONS = {"run": "runs", "dataset": "datasets", "tomogramVoxelSpacing": "tomogramVoxelSpacings",
             "tomogram": "tomograms", "annotation": "annotations", "annotationShape": "annotationShapes"}
COMPARATORS = {"_eq": operator.eq, "_neq": operator.ne, "_gt": operator.gt, "_gte": operator.ge,
               "_lt": operator.lt, "_lte": operator.le, "_in": lambda value, wanted: value in wanted,
               "_nin": lambda value, wanted: value not in wanted,
               "_is_null": lambda value, wanted: (value is None) == wanted}
PLACEHOLDERS = {"Int": 0, "Float": 0.0, "String": "", "Boolean": False, "DateTime": "2024-11-06T00:00:00+00:00"}


def portal_schema():
    """The GraphQL schema the installed cryoet_data_portal client was built against."""
    import cryoet_data_portal
    from graphql import build_schema

    return build_schema((Path(cryoet_data_portal.__file__).parent / "data" / "schema.graphql").read_text())


class PortalData:
    """The portal's tables, one per GraphQL root field (`runs`, `tomograms`, ...); records use the API's field
    names. Non-null scalars a record does not set get placeholders, so a record needs only what a test reads."""

    def __init__(self, schema=None):
        self.schema = schema or portal_schema()
        self.tables: dict[str, list[dict]] = {}
        self.ids = itertools.count(100)

    def add(self, table: str, **fields) -> dict:
        from graphql import GraphQLEnumType, GraphQLNonNull, GraphQLScalarType, get_named_type

        record = {}
        for name, field in get_named_type(self.schema.query_type.fields[table].type).fields.items():
            kind = field.type.of_type if isinstance(field.type, GraphQLNonNull) else None
            if isinstance(kind, GraphQLEnumType):
                record[name] = next(iter(kind.values))
            elif isinstance(kind, GraphQLScalarType):
                record[name] = PLACEHOLDERS.get(kind.name, "")
        record.update({"id": next(self.ids), **fields})
        self.tables.setdefault(table, []).append(record)
        return record

    def find(self, table: str, where: dict | None) -> list[dict]:
        return [record for record in self.tables.get(table, []) if self.matches(record, where or {})]

    def matches(self, record: dict, where: dict) -> bool:
        for field, condition in where.items():
            if condition is None:
                continue
            if field in RELATIONS:
                target = [r for r in self.tables.get(RELATIONS[field], []) if r["id"] == record.get(f"{field}Id")]
                if not target or not self.matches(target[0], condition):
                    return False
                continue
            for op, wanted in condition.items():
                if op not in COMPARATORS:  # fail loudly: a query this stand-in would answer wrongly
                    raise ValueError(f"the portal stand-in cannot filter with {op}")
                if wanted is not None and not COMPARATORS[op](record.get(field), wanted):
                    return False
        return True

    def executable_schema(self):
        """The schema with every root field answered from the tables (filtered by `where`)."""
        for table, field in self.schema.query_type.fields.items():
            field.resolve = lambda _root, _info, where=None, _table=table, **_: self.find(_table, where)
        return self.schema


class PortalServer:
    """`with PortalServer(data, folder) as portal:` the GraphQL API as https://HOST/graphql behind an HTTPS proxy
    on 127.0.0.1. `portal.env` routes the portal client there (add it to os.environ or a child's environment);
    `portal.fail_next = n` answers the next n requests with 503 Service Unavailable, `portal.delay = s` answers
    each after s seconds."""

    def __init__(self, data: PortalData, folder: Path):
        import trustme

        authority = trustme.CA()
        self.ca_file = Path(folder) / "portal-test-ca.pem"
        authority.cert_pem.write_to_path(str(self.ca_file))
        self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        authority.issue_cert(HOST).configure_cert(self.tls)
        self.schema = data.executable_schema()
        self.fail_next = 0
        self.delay = 0.0  # seconds before each answer (a portal that does not answer in time)
        self.queries = 0
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), type("Proxy", (ProxyHandler,), {"portal": self}))
        self.httpd.daemon_threads = True

    @property
    def env(self) -> dict[str, str]:
        return {"HTTPS_PROXY": f"http://127.0.0.1:{self.httpd.server_port}", "NO_PROXY": "127.0.0.1,localhost",
                "REQUESTS_CA_BUNDLE": str(self.ca_file),
                "COPICK_PORTAL_CACHE": "0"}  # every root asks the API: a test's answers are never stale

    def answer(self, body: bytes) -> tuple[int, dict]:
        from graphql import graphql_sync

        time.sleep(self.delay)
        with self.lock:
            self.queries += 1
            if self.fail_next > 0:
                self.fail_next -= 1
                return 503, {"message": "Service Unavailable"}
        request = json.loads(body)
        result = graphql_sync(self.schema, request["query"], variable_values=request.get("variables"))
        payload = {"data": result.data}
        if result.errors:
            payload["errors"] = [error.formatted for error in result.errors]
        return 200, payload

    def __enter__(self) -> PortalServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class ProxyHandler(BaseHTTPRequestHandler):
    """CONNECT to the portal's host: TLS is terminated here and the tunnel's requests go to the GraphQL API."""

    portal: PortalServer

    def do_CONNECT(self):
        if self.path.split(":")[0] != HOST:
            self.send_error(502, f"the portal stand-in serves only {HOST}")
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        with self.portal.tls.wrap_socket(self.connection, server_side=True) as tls:
            type("GraphQL", (GraphQLHandler,), {"portal": self.portal})(tls, self.client_address, self.server)
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


class GraphQLHandler(BaseHTTPRequestHandler):
    portal: PortalServer

    def do_POST(self):
        status, payload = self.portal.answer(self.rfile.read(int(self.headers["Content-Length"])))
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


# How the portal names and describes the CZII targets: (the name portal-made copick configs give the object, the
# annotations' object name); the identifiers are the same.
PORTAL_OBJECTS = {"apo-ferritin": ("ferritin-complex", "ferritin complex"),
                  "beta-amylase": ("beta-amylase-1", "beta-amylase"),
                  "beta-galactosidase": ("beta-galactosidase-1", "beta-galactosidase"),
                  "ribosome": ("cytosolic-ribosome", "cytosolic ribosome"),
                  "thyroglobulin": ("thyroglobulin-1", "thyroglobulin"),
                  "virus-like-particle": ("pp7-vlp", "pp7 vlp")}


def portal_named(objects: list[dict]) -> list[dict]:
    """Copies of copick pickable objects (config dicts) named as a portal-made config names them."""
    return [{**obj, "name": PORTAL_OBJECTS.get(obj["name"], (obj["name"],))[0]} for obj in objects]

# The portal tomograms made from each simulated type: (its metadata, as copick's backend names it from them).
PORTAL_TOMOGRAMS = {
    "wbp": [dict(reconstructionMethod="WBP", processing="raw", processingSoftware=None, ctfCorrected=False)],
    "ctfdeconvolved": [dict(reconstructionMethod="WBP", processing="filtered", processingSoftware=None,
                            ctfCorrected=True)],
    "denoised": [dict(reconstructionMethod="WBP", processing="denoised", processingSoftware="denoiset",
                      ctfCorrected=True),
                 # a second denoised tomogram (IsoNet's, here the raw data): kinds must choose, deterministically
                 dict(reconstructionMethod="WBP", processing="denoised", processingSoftware="IsoNet",
                      ctfCorrected=False, source="wbp")],
}


def publish_portal(config, s3, data: PortalData, datasets: dict[int, list[str]], overlay: Path,
                   voxel_size: float = 10.0, truth=("curation", "0")) -> Path:
    """Publish the runs of a simulated local project as portal datasets ({dataset ID: [local run names]}): their
    tomograms and ground truth to the S3 server `s3` at the portal's paths and their metadata to `data`. Writes
    and returns a portal copick config for those datasets (objects named as the portal names them) with
    `overlay` as its overlay."""
    local = open_project(config)
    fs = s3.filesystem()
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    run_ids = itertools.count(16463)
    by_name = {run.name: run for run in local.runs}
    for dataset_id, names in datasets.items():
        data.add("datasets", id=dataset_id, title=f"stand-in of dataset {dataset_id}",
                 s3Prefix=f"s3://{BUCKET}/{dataset_id}/")
        for i, name in enumerate(names):
            publish_run(by_name[name], f"TS_{dataset_id % 100}_{i}", next(run_ids), dataset_id, fs, data,
                        voxel_size, truth)
    return write_portal_config(config, list(datasets), overlay)


def publish_run(run, portal_name: str, run_id: int, dataset_id: int, fs, data: PortalData, voxel_size: float,
                truth) -> None:
    prefix = f"{BUCKET}/{dataset_id}/{portal_name}"
    reconstructions = f"{prefix}/Reconstructions/VoxelSpacing{voxel_size:.3f}"
    data.add("runs", id=run_id, datasetId=dataset_id, name=portal_name, s3Prefix=f"s3://{prefix}/")
    spacing = data.add("tomogramVoxelSpacings", runId=run_id, voxelSpacing=voxel_size,
                       s3Prefix=f"s3://{reconstructions}/")
    local_spacing = run.voxel_spacings[0]
    for tomogram in local_spacing.tomograms:
        for meta in PORTAL_TOMOGRAMS.get(tomogram.tomo_type, []):
            source = local_spacing.get_tomogram(meta.get("source", tomogram.tomo_type))
            fields = {k: v for k, v in meta.items() if k != "source"}
            record = data.add("tomograms", runId=run_id, tomogramVoxelSpacingId=spacing["id"], name=portal_name,
                              voxelSpacing=voxel_size, **fields)
            path = f"{reconstructions}/Tomograms/{record['id']}/{portal_name}.zarr"
            publish_zarr(source, path, voxel_size, fs)
            record["s3OmezarrDir"] = f"s3://{path}"
    for obj in run.root.pickable_objects:
        if obj.identifier is None or obj.name not in PORTAL_OBJECTS:
            continue
        points = read_picks(run, [obj.name], *truth)[obj.name] / local_spacing.voxel_size  # Å -> voxels
        if not len(points):
            continue  # the portal has no empty annotation files
        annotation = data.add("annotations", runId=run_id, tomogramVoxelSpacingId=spacing["id"],
                              objectId=obj.identifier, objectName=PORTAL_OBJECTS[obj.name][1], groundTruthStatus=True)
        shape = data.add("annotationShapes", annotationId=annotation["id"], shapeType="OrientedPoint")
        path = (f"{reconstructions}/Annotations/{annotation['id']}/"
                f"{PORTAL_OBJECTS[obj.name][1].replace(' ', '_')}-1.0_orientedpoint.ndjson")
        fs.pipe(path, "\n".join(json.dumps({"type": "orientedpoint", "location": dict(zip("xyz", map(float, p))),
                                            "xyz_rotation_matrix": np.eye(3).tolist()}) for p in points).encode())
        data.add("annotationFiles", annotationShapeId=shape["id"], tomogramVoxelSpacingId=spacing["id"],
                 format="ndjson", s3Path=f"s3://{path}", source="dataset_author")
        data.add("annotationAuthors", annotationId=annotation["id"], name="CZII stand-in curators", authorListOrder=1)


def publish_zarr(tomogram, path: str, voxel_size: float, fs) -> None:
    """Upload a local OME-Zarr tomogram to `path`, its multiscale scales restated at the portal's voxel size."""
    fs.put(tomogram.static_path or tomogram.overlay_path, path, recursive=True)
    attrs = json.loads(fs.cat(f"{path}/.zattrs"))
    for level, dataset in enumerate(attrs["multiscales"][0]["datasets"]):
        dataset["coordinateTransformations"][0]["scale"] = [voxel_size * 2 ** level] * 3
    fs.pipe(f"{path}/.zattrs", json.dumps(attrs).encode())


def write_portal_config(config, dataset_ids: list[int], overlay: Path) -> Path:
    """A copick portal config for `dataset_ids` with the local project's objects, renamed as the portal names
    them, picks to `overlay`."""
    objects = portal_named(json.loads(Path(config).read_text())["pickable_objects"])
    overlay.mkdir(parents=True, exist_ok=True)
    out = overlay.parent / f"{overlay.name}.json"
    out.write_text(json.dumps({"name": "CZ cryoET Data Portal stand-in", "version": "0.2.0",
                               "config_type": "cryoet_data_portal", "user_id": "copick-soup",
                               "overlay_root": f"local://{overlay}", "overlay_fs_args": {"auto_mkdir": True},
                               "dataset_ids": dataset_ids, "pickable_objects": objects}, indent=2))
    return out
