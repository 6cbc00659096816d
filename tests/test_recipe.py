"""Recipes: every shipped recipe validates, and every user mistake is one line, exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import GOOD, with_, write

from llm_unlearn.cli import main
from llm_unlearn.recipe import (
    RESERVED_TRAIN_FIELDS,
    MethodSection,
    RecipeError,
    load_recipe,
    validate_recipe,
)
from llm_unlearn.terms import TERMS
from llm_unlearn.trainer import training_config

ALL_RECIPES = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))
# CNN-track recipes (`methods:`) have their own schema and tests (test_cnn_recipe.py)
RECIPES = [p for p in ALL_RECIPES if "methods" not in yaml.safe_load(p.read_text())]


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_shipped_recipes_validate(path: Path) -> None:
    assert load_recipe(path).quantize[0] == "fp"
    # TrainingArguments accepts the train section (bf16 needs a GPU: switched off on this CPU)
    recipe = load_recipe(path, ["train.bf16=false"])
    for method in recipe.method:
        training_config(recipe, method, Path("/tmp/unused"), hinge_margin=0.01)


BASELINES = [
    f"{m}_{d}" for m in ("ga", "ga_gdr", "ga_klr", "npo", "npo_gdr", "npo_klr") for d in ("news", "books")
]
ROBUST = ["sure_news", "sure_books", "quail_news", "oeu_news"]


def test_the_quick_demo_runs_the_demos_settings_on_fewer_models_and_columns() -> None:
    """recipes/demo_quick.yaml is a cut of recipes/demo.yaml: its methods, training, metrics, grid and
    relearning are the demo's own, on the grid-aligned target only, under fewer columns."""
    demo, quick = (load_recipe(RECIPES[0].parent / f"{n}.yaml") for n in ("demo", "demo_quick"))
    assert (quick.model.target, quick.model.retrain) == ("demo_quick", "demo")
    assert quick.model.grid_align == demo.model.grid_align
    assert quick.train == demo.train and quick.evaluate == demo.evaluate and quick.data == demo.data
    assert [m.model_copy(update={"targets": None}) for m in quick.method] == [demo.method[0], demo.method[2]]
    assert all(m.targets == ("grid-aligned",) for m in quick.method)
    assert set(quick.quantize) < set(demo.quantize) and set(quick.relearn) < set(demo.relearn)


def test_paper_hyperparameters() -> None:
    real_model = ["smollm2_austen_natural", "smollm2_austen_released4bit"]
    tofu = ["demo_tofu", "tofu_llama32_1b_audit"]  # checked in test_data_tofu.py
    wmdp = ["demo_wmdp", "rmu_wmdp"]  # checked in test_wmdp_pipeline.py
    assert sorted(p.stem for p in RECIPES) == sorted(
        ["demo", "demo_full", "demo_quick", *BASELINES, *ROBUST, *real_model, *tofu, *wmdp]
    )
    for name in BASELINES + ROBUST:
        recipe = load_recipe(RECIPES[0].parent / f"{name}.yaml")
        lr = recipe.train["learning_rate"]
        assert lr == 1e-5 if not name.startswith("sure") else 5e-5 <= lr <= 2e-4, name
        assert recipe.train["num_train_epochs"] == (10 if name.endswith("news") else 1)
        assert recipe.data.source == (
            "muse-bench/MUSE-News" if name.endswith("news") else "muse-bench/MUSE-Books"
        )
        for method in recipe.method:
            assert method.beta == 0.1 and method.retain_weight == 1.0
            assert (method.sure is not None) == name.startswith("sure")
            assert method.sure is None or method.sure.percentile == 90
    quail = load_recipe(RECIPES[0].parent / "quail_news.yaml").method[0]
    assert quail.name == "ga_gdr" and quail.quail.margin == "auto"
    oeu = load_recipe(RECIPES[0].parent / "oeu_news.yaml").method
    assert [m.run_name for m in oeu] == ["oeu", "oeu+global"]


def test_method_sections_reach_the_training_config() -> None:
    recipe = load_recipe(
        RECIPES[0].parent / "demo.yaml",
        [
            "method=[{name: npo_gdr, sure: {percentile: 80}, learning_rate: 3.0e-4},"
            " {name: ga_gdr, quail: {margin: 0.25, distance: l2, weight: 2}},"
            " {name: ga_gdr, quail: {}, label: quail_auto}, {name: oeu}]"
        ],
    )
    sure, quail, auto, oeu = recipe.method
    assert [m.run_name for m in recipe.method] == ["npo_gdr+sure", "ga_gdr+quail", "quail_auto", "oeu"]
    config = training_config(recipe, sure, Path("/tmp/unused"))
    assert (config.modifiers["sure"], config.learning_rate, config.forget_loss) == (
        {"percentile": 80}, 3e-4, "npo",
    )  # fmt: skip
    config = training_config(recipe, quail, Path("/tmp/unused"))
    assert config.modifiers == {"quail": {"weight": 2, "margin": 0.25, "distance": "l2"}}
    assert config.learning_rate == recipe.train["learning_rate"]
    auto_config = training_config(recipe, auto, Path("/tmp/unused"), hinge_margin=0.01)
    assert auto_config.modifiers["quail"]["margin"] == 0.01
    config = training_config(recipe, oeu, Path("/tmp/unused"))
    assert (config.forget_loss, config.retain_loss, config.modifiers) == (
        "entropy", "gdr", {"projection": {"scope": "layer", "alpha": 1.0}},
    )  # fmt: skip


BAD = {
    "unknown top-level key": (
        with_(optimizer="adam"),
        r"optimizer: unknown field; allowed here: name, model",
    ),
    "unknown model key": (
        with_(model__checkpoint="x"),
        r"model\.checkpoint: unknown field; allowed here: target",
    ),
    "wrong type": (with_(data={"max_length": "long"}), r"data\.max_length: .*integer.*'long'"),
    "out of range": (with_(data={"max_length": 2}), r"data\.max_length: .*greater than or equal to 8"),
    "unknown method": (
        with_(method=[{"name": "gaa"}]),
        r"method\.0\.name: unknown method 'gaa'; known: (\w+, )*ga, ga_gdr",
    ),
    "unknown quantizer": (
        with_(quantize=["gptx-w4"]),
        r"quantize: unknown quantizer 'gptx-w4'; known: .*rtn-w",
    ),
    "malformed quantizer": (with_(quantize=["rtn-w5"]), r"quantize: .*rtn-w5.*rtn-w\{2,3,4,8\}"),
    "in-context shots from the retain set": (
        with_(quantize=["incontext-retain-3"]),
        r"quantize: .*'incontext-retain-3'; expected incontext-forget-\{k\}",
    ),
    "no in-context shots": (with_(quantize=["incontext-forget-0"]), r"quantize: .*with k >= 1"),
    "in-context shots without a metric that takes them": (
        with_(quantize=["incontext-forget-3"], evaluate=["verbmem"]),
        r"quantize: incontext-forget-3 has cells for none of evaluate.s metrics; evaluate one of knowmem_f",
    ),
    "unknown metric": (with_(evaluate=["verbmen"]), r"evaluate: unknown metric 'verbmen'; known: .*knowmem"),
    "unknown train field": (
        with_(train={"learning_rte": 1}),
        r"train: 'learning_rte' .*did you mean 'learning_rate'",
    ),
    "wrong train type": (
        with_(train={"learning_rate": "fast"}),
        r"train: learning_rate: .*valid number.*'fast'",
    ),
    "reserved train field": (with_(train={"output_dir": "x"}), r"train: 'output_dir' is set by the recipe's"),
    "missing section": (with_(model=...), r"model: required field is missing"),
    "negative beta": (with_(method=[{"name": "npo", "beta": -1}]), r"method\.0\.beta: .*greater than 0"),
    "grid without grid_align": (
        with_(model={"target": "demo"}, method=[{"name": "ga", "targets": ["grid-aligned"]}]),
        r"method\.0\.targets asks for 'grid-aligned' but model\.grid_align is not set",
    ),
    "unknown target kind": (
        with_(method=[{"name": "ga", "targets": ["ideal"]}]),
        r"method\.0\.targets: 'ideal' is not a target of this recipe; use 'natural' or 'grid-aligned'",
    ),
    "target named like another row": (
        with_(model={"target": "demo", "name": "retrain"}),
        r"model\.name: 'retrain' labels other rows of the audit",
    ),
    "target named like the grid-aligned copy": (
        with_(model={"target": "demo", "name": "grid-aligned"}),
        r"model\.name: 'grid-aligned' labels other rows",
    ),
    "target name with a slash": (with_(model={"target": "demo", "name": "a/b"}), r"model\.name: .*pattern"),
    "stop on unknown metric": (
        with_(method=[{"name": "ga", "stop": {"metric": "forget_acc", "below": 1}}]),
        r"method\.0\.stop\.metric: unknown metric 'forget_acc'",
    ),
    "projection on a method that adds gradients": (
        with_(method=[{"name": "ga_gdr", "projection": {"alpha": 0.5}}]),
        r"method\.0: .*projection applies to methods that project gradients \(oeu\), not 'ga_gdr'",
    ),
    "projection alpha out of range": (
        with_(method=[{"name": "oeu", "projection": {"alpha": 2}}]),
        r"method\.0\.projection\.alpha: .*less than or equal to 1",
    ),
    "two runs with one name": (
        with_(method=[{"name": "ga_gdr", "sure": {}}, {"name": "ga_gdr", "sure": {"percentile": 80}}]),
        r"method\.1: a second run named 'ga_gdr\+sure'; give one of them a distinct label",
    ),
    "sure with lora": (
        with_(model__lora={"r": 4}, method=[{"name": "ga_gdr", "sure": {}}]),
        r"model\.lora with a method's sure",
    ),
    "quail margin on a non-RTN grid": (
        with_(method=[{"name": "ga_gdr", "quail": {"quantizer": "fp"}}]),
        r"method\.0\.quail\.quantizer: 'fp': margin auto is defined on an RTN grid",
    ),
    "negative quail margin": (
        with_(method=[{"name": "ga_gdr", "quail": {"margin": -1}}]),
        r"method\.0\.quail\.margin: margin must be >= 0 or 'auto'",
    ),
    "sure percentile out of range": (
        with_(method=[{"name": "ga", "sure": {"percentile": 120}}]),
        r"method\.0\.sure\.percentile: .*less than or equal to 100",
    ),
    "unknown lora field": (
        with_(model__lora={"rank": 4}),
        r"model\.lora\.rank: unknown field; allowed here: r,",
    ),
    "not a mapping": ("- just\n- a list\n", r"a recipe is a YAML mapping"),
    "invalid yaml": ("model: {target: demo\n", r"not valid YAML \(line \d+\)"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_recipe_is_one_line_exit_2(case: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data, pattern = BAD[case]
    assert main(["check", str(write(tmp_path, data))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("llm-unlearn: error: ")
    assert __import__("re").search(pattern, err), err


def test_a_cnn_recipe_points_to_the_cnn_command(capsys: pytest.CaptureFixture) -> None:
    cnn = next(p for p in ALL_RECIPES if p not in RECIPES)
    assert main(["check", str(cnn)]) == 2
    assert "run it with `llm-unlearn cnn" in capsys.readouterr().err


def test_missing_recipe_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["check", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: recipe file not found" in capsys.readouterr().err


def test_set_overrides_go_through_validation(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write(tmp_path, GOOD)
    recipe = load_recipe(path, ["train.learning_rate=2e-4", "method.0.beta=0.5", "data.source=/data/muse"])
    assert recipe.train["learning_rate"] == 2e-4 and recipe.method[0].beta == 0.5
    assert recipe.data.source == "/data/muse"
    assert main(["check", str(path), "--set", "train.learning_rate=fast"]) == 2
    assert "train: learning_rate" in capsys.readouterr().err
    assert main(["check", str(path), "--set", "learning_rate"]) == 2
    assert "expected KEY.PATH=VALUE" in capsys.readouterr().err


def test_training_arguments_errors_are_recipe_errors(tmp_path: Path) -> None:
    # a range TrainingArguments would only reject when the run builds it: refused on reading
    with pytest.raises(RecipeError, match=r"train: logging_steps: must be > 0 \(got 0"):
        load_recipe(write(tmp_path, with_(train={"logging_steps": 0, "logging_strategy": "steps"})))
    # TrainingArguments' own cross-field checks
    train = {"load_best_model_at_end": True, "eval_strategy": "steps"}
    recipe = load_recipe(write(tmp_path, with_(train=train)))
    with pytest.raises(RecipeError, match=r"train: .*load_best_model_at_end requires"):
        training_config(recipe, recipe.method[0], tmp_path)


def test_check_prints_the_resolved_recipe(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["check", str(write(tmp_path, GOOD)), "--set", "quantize=[rtn-w4-g32]"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["quantize"] == ["fp", "rtn-w4-g32"]  # fp is always audited: recovery is relative to it
    assert resolved["data"]["retain_split"] == "retain1"


def test_home_in_paths_is_expanded() -> None:
    recipe = load_recipe(
        RECIPES[0].parent / "demo.yaml",
        ["model.target=~/models/t", "model.retrain=~/models/r", "data.source=~/bench", "output.dir=~/runs/x"],
    )
    home = Path.home()
    assert (recipe.model.target, recipe.model.retrain) == (str(home / "models/t"), str(home / "models/r"))
    assert (recipe.data.source, recipe.output.dir) == (str(home / "bench"), home / "runs/x")


def test_device_map_is_auto_or_unset(tmp_path: Path) -> None:
    assert load_recipe(write(tmp_path, GOOD)).device_map is None
    assert load_recipe(write(tmp_path, with_(device_map="auto"))).device_map == "auto"
    with pytest.raises(RecipeError, match="device_map"):
        load_recipe(write(tmp_path, with_(device_map="balanced")))


def test_the_target_label_defaults_by_what_the_recipe_does() -> None:
    """natural where the recipe unlearns the target or grid-aligns a copy (it is the one trained
    normally), target in an audit of models unlearned elsewhere, model.name when given; a method's
    targets name the labels."""
    audit_only = {
        **GOOD,
        "model": {"target": "demo"},
        "method": [],
        "models": [{"name": "x", "path": "demo"}],
    }
    assert validate_recipe(audit_only).target_label == "target"
    assert validate_recipe(audit_only).targets() == ("target",)
    aligned = {**audit_only, "model": {"target": "demo", "grid_align": "rtn-w4-g32"}}
    assert (
        validate_recipe(aligned).targets() == validate_recipe(GOOD).targets() == ("natural", "grid-aligned")
    )
    named = validate_recipe(with_(model__name="released", method=[{"name": "ga", "targets": ["released"]}]))
    assert named.target_label == "released" and named.targets(named.method[0]) == ("released",)
    assert validate_recipe({**audit_only, "model": {"target": "demo", "name": "foo"}}).target_label == "foo"


def test_an_old_recipe_names_the_grid_aligned_target_grid() -> None:
    """recipe.yaml of an older run folder: `targets: [grid]` reads as grid-aligned, and without
    model.name it resolves as today's recipe does (check_run_folder compares the two)."""
    old = with_(method=[{"name": "ga", "targets": ["grid"]}, {"name": "npo", "targets": ["natural", "grid"]}])
    recipe = validate_recipe(old)
    assert [m.targets for m in recipe.method] == [("grid-aligned",), ("natural", "grid-aligned")]
    new = with_(
        method=[
            {"name": "ga", "targets": ["grid-aligned"]},
            {"name": "npo", "targets": ["natural", "grid-aligned"]},
        ]
    )
    assert validate_recipe(recipe.model_dump(mode="json")).model_dump() == validate_recipe(new).model_dump()


def test_method_fields_and_reserved_train_fields_derive_from_the_registry(tmp_path) -> None:
    for name in TERMS.names():
        for key in TERMS.get(name).params.model_fields:
            assert key in MethodSection.model_fields or TERMS.get(name).regulariser, (name, key)
    assert {
        "output_dir",
        "forget_loss",
        "retain_loss",
        "term_params",
        "modifiers",
    } <= RESERVED_TRAIN_FIELDS
    assert "learning_rate" not in RESERVED_TRAIN_FIELDS
    with pytest.raises(
        RecipeError, match=r"method\.0: muse_compat is a parameter of the terms klr, npo; 'ga'"
    ):
        load_recipe(write(tmp_path, with_(method=[{"name": "ga", "muse_compat": True}])))
    with pytest.raises(RecipeError, match=r"train: 'term_params' is set by the recipe's method"):
        load_recipe(write(tmp_path, with_(train={"term_params": {}})))


def test_shipped_recipes_still_resolve_to_the_baselines_terms() -> None:
    root = Path(__file__).parents[1] / "recipes"
    recipe = load_recipe(root / "npo_gdr_news.yaml", ["train.bf16=false"])  # no GPU here
    config = training_config(recipe, recipe.method[0], Path("/tmp/unused"))
    assert config.weighted_terms() == [("npo", 1.0), ("gdr", 1.0)]
    assert config.resolved_params()["npo"].beta == 0.1


def test_quantize_lists_any_registered_column_fp_first() -> None:
    """An in-context probe is named in `quantize:` beside the quantizers, fp still first."""
    recipe = validate_recipe(with_(quantize=["rtn-w4-g32", "incontext-forget-3"]))
    assert recipe.quantize == ("fp", "rtn-w4-g32", "incontext-forget-3")


def test_a_wmdp_source_defaults_to_its_open_corpora_and_own_metrics() -> None:
    recipe = validate_recipe(with_(data={"source": "cais/wmdp"}))
    assert recipe.data.kind == "wmdp"
    assert (recipe.data.forget_split, recipe.data.retain_split) == ("cyber-forget-corpus", "wikitext")
    assert recipe.evaluate == ("wmdp_bio", "wmdp_cyber", "mmlu")


def test_a_wmdp_split_that_names_no_corpus_is_one_line() -> None:
    with pytest.raises(RecipeError, match="retain_split: 'retain1' is not a WMDP corpus; use") as caught:
        validate_recipe(with_(data={"source": "cais/wmdp", "retain_split": "retain1"}))
    assert "\n" not in str(caught.value)
    with pytest.raises(RecipeError, match="evaluate: wmdp_bio reads WMDP data but data.source is a MUSE"):
        validate_recipe(with_(evaluate=["wmdp_bio"]))


def test_beta_defaults_to_the_methods_own_term_default(tmp_path) -> None:
    """β not given: WGA's weight exponent takes its reference's 1, the inverse temperatures 0.1;
    given, it goes to the term; a method without a β term keeps the recorded 0.1."""
    methods = [
        {"name": "wga"},
        {"name": "wga", "beta": 2.0, "label": "wga2"},
        {"name": "npo_gdr"},
        {"name": "ceu"},
    ]
    recipe = validate_recipe(with_(method=methods))
    assert [m.beta for m in recipe.method] == [1.0, 2.0, 0.1, 0.1]
    configs = [training_config(recipe, m, tmp_path) for m in recipe.method[:3]]
    assert [c.resolved_params()[t].beta for c, t in zip(configs, ["wga", "wga", "npo"], strict=True)] == [
        1,
        2,
        0.1,
    ]
    again = validate_recipe(recipe.model_dump(mode="json"))  # the run folder's recipe.yaml reads the same
    assert again.model_dump() == recipe.model_dump()


def test_altpo_needs_its_alternates_file_and_tofu_data(tmp_path) -> None:
    """AltPO's required `alternates` missing, a malformed file, or MUSE data: one line each, before
    anything is built; given, the file reaches the term's parameters."""
    alternates = tmp_path / "alt5_seed_0.json"
    alternates.write_text('{"question": "q", "answer": "a", "alternate": "b"}\n')
    bad = tmp_path / "bad.json"
    bad.write_text('{"question": "q", "alternate": "b"}\n')
    tofu = {"source": "demo_tofu"}
    cases = {
        r"method\.0: altpo needs `alternates`: AltPO: a JSON-lines file": with_(
            data=tofu, method=[{"name": "altpo"}]
        ),
        r"method\.0: .*nowhere\.json' is not a file": with_(
            data=tofu, method=[{"name": "altpo", "alternates": str(tmp_path / "nowhere.json")}]
        ),
        r"method\.0: .*bad\.json' row 0: expected an object with string 'question' and 'answer'": with_(
            data=tofu, method=[{"name": "altpo", "alternates": str(bad)}]
        ),
        r"method\.0: altpo reads tofu data only, but data\.source 'demo' is muse; use": with_(
            method=[{"name": "altpo", "alternates": str(alternates)}]
        ),
    }
    for pattern, data in cases.items():
        with pytest.raises(RecipeError, match=pattern) as caught:
            validate_recipe(data)
        assert "\n" not in str(caught.value)
    recipe = validate_recipe(with_(data=tofu, method=[{"name": "altpo", "alternates": str(alternates)}]))
    params = training_config(recipe, recipe.method[0], tmp_path).resolved_params()["altpo"]
    assert (params.alternates, params.alternate_key, params.beta) == (str(alternates), "alternate", 0.1)
