"""Soup classes find the project's objects by name, then by identifier (GO/UniProt), or as --class-map says."""

import pytest
from click.testing import CliRunner
from helpers import SMALLER, make_test_soup

from copick_soup.cli import main
from copick_soup.data import open_project, read_picks
from copick_soup.data.classes import map_classes, parse_class_map
from copick_soup.errors import SoupError
from copick_soup.model.manifest import SoupManifest
from copick_soup.objects import ParticleClass, classes_from_root, czii_pickable_objects
from copick_soup.testing.portal_standin import PORTAL_OBJECTS, portal_named

# how portal-made copick configs name the CZII targets (same identifiers)
PORTAL = {name: portal for name, (portal, _) in PORTAL_OBJECTS.items()}


def portal_objects(drop_identifier_of=None):
    return [{**obj, "identifier": None} if obj["name"] == PORTAL.get(drop_identifier_of) else obj
            for obj in portal_named(czii_pickable_objects())]


def test_classes_map_by_name_then_identifier_then_as_told():
    soup = [ParticleClass("apo-ferritin", 1, 60.0, identifier="GO:0070288"), ParticleClass("ribosome", 4, 150.0)]
    project = [ParticleClass("ferritin-complex", 1, 60.0, identifier="GO:0070288"),
               ParticleClass("ribosome", 2, 150.0), ParticleClass("cytosolic-ribosome", 3, 150.0)]
    assert map_classes(soup, project) == {"apo-ferritin": "ferritin-complex", "ribosome": "ribosome"}
    assert map_classes(soup, project, {"ribosome": "cytosolic-ribosome"})["ribosome"] == "cytosolic-ribosome"
    with pytest.raises(SoupError, match="soup class 'ribosome' matches no particle object of the project by name or "
                                        "identifier; candidates: ferritin-complex, cytosolic-ribosome"):
        map_classes(soup, project[:1] + project[2:])
    with pytest.raises(SoupError, match="--class-map: the project has no particle object 'nope'; it has "):
        map_classes(soup, project, {"ribosome": "nope"})
    with pytest.raises(SoupError, match="--class-map: the soup has no class 'virus'; its classes are"):
        map_classes(soup, project, {"virus": "ribosome"})
    with pytest.raises(SoupError, match="all map to 'ribosome'"):
        map_classes(soup, project, {"apo-ferritin": "ribosome"})
    assert parse_class_map(["a=b,c=d"]) == {"a": "b", "c": "d"}


@pytest.fixture(scope="module")
def soup(tmp_path_factory):
    return make_test_soup(tmp_path_factory.mktemp("soup"), ("denoised",))[1]


def test_a_portal_made_project_gets_the_picks_under_its_own_names(soup, make_project):
    assert all(c.identifier for c in SoupManifest.read(soup).classes)  # recorded from the training project
    config = make_project("portal", runs=1, objects=portal_objects(), seed=5, shape=SMALLER)
    result = CliRunner().invoke(main, ["pick", "-c", str(config), "--soup", str(soup), "--window", "32",
                                       "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "  apo-ferritin -> ferritin-complex (by identifier GO:0070288)" in result.output
    assert result.output.index("-> pp7-vlp") < result.output.index("exp_000 ")  # before any run
    root = open_project(config)
    names = [c.name for c in classes_from_root(root)]
    picked = read_picks(root.runs[0], names, "copick-soup", "0")
    assert sum(len(p) for p in picked.values()) > 0 and set(picked) == set(PORTAL.values())


def test_a_class_without_a_match_stops_before_any_run_and_names_the_candidates(soup, make_project):
    config = make_project("unmatched", runs=1, objects=portal_objects(drop_identifier_of="ribosome"), seed=6,
                          shape=SMALLER)
    result = CliRunner().invoke(main, ["pick", "-c", str(config), "--soup", str(soup), "--window", "32"])
    assert result.exit_code != 0
    assert result.output.strip().splitlines()[-1].startswith(
        "Error: soup class 'ribosome' (GO:0022626) matches no particle object of the project by name or identifier; "
        "candidates: "
        "ferritin-complex, beta-amylase-1")
    assert not open_project(config).runs[0].get_picks(user_id="copick-soup")
    mapped = CliRunner().invoke(main, ["pick", "-c", str(config), "--soup", str(soup), "--window", "32",
                                       "--class-map", "ribosome=cytosolic-ribosome", "--device", "cpu"])
    assert mapped.exit_code == 0, mapped.output
    assert "  ribosome -> cytosolic-ribosome (by --class-map)" in mapped.output
