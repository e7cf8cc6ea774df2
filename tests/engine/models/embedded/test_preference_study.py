"""The simulated-artist study's no-tori figures: the critic's mean p(torus) beside the torus fraction."""
import pytest
import torch

from engine.models.embedded.procedural import TRUNCATION, ShapeSpec, field_volume
from engine.models.fields import SDFGrid
from engine.render import orbit_cameras, render
from engine.rewards.preference import fit_orbit, fit_render_config
from engine.models.embedded.preference_study import RULES, torus_probability

IDENTITY = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
GREY = (0.6, 0.6, 0.6)


@pytest.fixture(scope="module")
def torus_and_sphere():
    """Renders (B=2, V=4, C, 32, 32) of a procedural torus and sphere, from the study's fit views."""
    specs = [ShapeSpec("torus", "grey", GREY, (0.5, 0.18), IDENTITY), ShapeSpec("sphere", "grey", GREY, (0.6,), IDENTITY)]
    grid = torch.stack([field_volume(s, 32) for s in specs])
    with torch.no_grad():
        return render(SDFGrid(grid, TRUNCATION), orbit_cameras(fit_orbit()), fit_render_config(32))


def test_torus_probability_is_high_for_a_torus_and_low_for_a_sphere(torus_and_sphere):
    p = torus_probability(torus_and_sphere)
    assert p.shape == (2,) and torch.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
    assert p[0] > 0.5 > p[1]


def test_no_tori_reports_mean_torus_probability_and_the_fraction_beside_it(torus_and_sphere):
    rule = RULES["no-tori"]
    prompts = ["a torus", "a sphere"]
    measure = rule.sample_measure(None, None, prompts, torus_and_sphere)
    p = torus_probability(torus_and_sphere)
    assert rule.report(measure) == pytest.approx(float(p.mean()), abs=1e-6)  # lower is liked
    assert rule.second is not None and "fraction" in rule.second.unit
    assert rule.second.report(None, None, prompts, torus_and_sphere) == pytest.approx(0.5)  # 1 torus of 2


def test_study_table_puts_the_second_figure_in_its_own_column(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[4] / "scripts" / "preference_demo.py"
    spec = importlib.util.spec_from_file_location("preference_demo", path)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    run = {"figure": 0.05, "second": 0.125, "fd_to_base": 1.5, "curve": [[0, 0.2, 0.0], [2, 0.1, 0.7], [4, 0.05, 1.5]]}
    results = {"rules": {"no-tori": {"unit": "mean p(torus)", "second_unit": "torus fraction",
                                     "picks": {"liked": 60, "disliked": 12, "neutral": 0}, "auc_by_picks": {"72": 1.0},
                                     "base": 0.2, "base_second": 0.167, "fd_base_other_seeds": 8.0,
                                     "refl on the rule's measure": run}}}
    head, _, row = demo.results_table(results).splitlines()
    cols = [c.strip() for c in head.strip("|").split("|")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cols) == len(cells)
    assert cells[cols.index("base") + 1] == "0.167" and cols[cols.index("base") + 1] == "2nd"
    assert cells[-3:] == ["0.050", "0.125", "1.50"]
    # the plot draws each run's measure against its FD to base, round by round
    from PIL import Image

    plot = demo.write_plot(results, tmp_path / "study.png")
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.width > image.height > 100


def test_fd_at_an_equal_movement_is_read_off_the_curves():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[4] / "scripts" / "preference_demo.py"
    spec = importlib.util.spec_from_file_location("preference_demo", path)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    curve = [[0, 1.0, 0.0], [2, 1.1, 1.0], [4, 1.3, 3.0]]  # [round, measure, FD]
    assert demo.fd_at_measure(curve, 1.05, 1.0) == pytest.approx(0.5)
    assert demo.fd_at_measure(curve, 1.2, 1.0) == pytest.approx(2.0)
    assert demo.fd_at_measure(curve, 1.4, 1.0) is None
    down = [[0, 0.1, 0.0], [2, 0.06, 2.0]]
    assert demo.fd_at_measure(down, 0.08, -1.0) == pytest.approx(1.0)  # lower is liked
    results = {"rules": {"taller": {"base": 1.0, "refl on preference": {"figure": 1.3, "curve": curve},
                                    "refl on the rule's measure": {"figure": 1.2, "curve": [[0, 1.0, 0.0], [8, 1.2, 4.0]]}}}}
    row = demo.movement_table(results).splitlines()[-1]
    assert [c.strip() for c in row.strip("|").split("|")] == ["taller", "+0.200", "1.00", "2.00", "2.00", "4.00"]


def test_study_stops_with_a_message_when_marks_hold_one_class():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[4] / "scripts" / "preference_demo.py"
    spec = importlib.util.spec_from_file_location("preference_demo", path)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    demo.check_classes("orange", "held-out candidates (--held-out)", ["liked", "neutral", "disliked"])  # both: fine
    with pytest.raises(SystemExit, match=r"orange: the 3 held-out candidates \(--held-out\) hold 2 liked, 0 disliked"):
        demo.check_classes("orange", "held-out candidates (--held-out)", ["liked", "liked", "neutral"])
