"""End to end on a real git + DVC repository: the real SmolLM2 and MiniLM models, small settings, DVC's own
output.

One repository is built per module (fetching SmolLM2 costs ~25 s) with two of the default experiments, a
LoRA on SmolLM2 (with its merge) and a MiniLM classification head, and the tests run in order on it: a
full run, a no-op run, a train change, a tokenize change, an experiment.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import copy_project
from tests.test_resume import plan
from tests.workspace import edit, keep_experiments, read_yaml

BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
       "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
       "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com"}
EXPERIMENT = "dialogsum-lora"
OTHER = "phrasebank-head"  # a second experiment that a change to the first must leave alone
# an edit of the experiment's file re-runs the plan check and its config stage, then what the edit touches
EDITED = {"plan", f"config@{EXPERIMENT}"}
AFTER_TRAIN = {f"{stage}@{EXPERIMENT}" for stage in ("train", "merge", "predict_after")} | {"report"}


def predictions(repo: Path) -> dict[str, str]:
    folder = repo / "data/predictions" / EXPERIMENT
    return {p.name: p.read_text() for p in sorted(folder.glob("*.jsonl"))}


def sh(repo: Path, *command: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=repo, env=ENV, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def stages_run(output: str) -> set[str]:
    """Stage names DVC says it ran ('Running stage 'train@dialogsum-lora':'), with their @item."""
    return set(re.findall(r"Running stage '([^']+)'", output))


def stage_names(output: str) -> set[str]:
    return {name.split("@")[0] for name in stages_run(output)}


def set_param(repo: Path, dotted: str, value) -> None:
    """Set a key of the experiment's file (`train.lora.r`)."""
    edit(repo / "experiments" / f"{EXPERIMENT}.yaml", dotted, value)


def small_settings(repo: Path) -> None:
    """Same pipeline, two experiments, fewer rows and steps: the module stays within minutes on 2 cores."""
    keep_experiments(repo, [EXPERIMENT, OTHER])
    for name in (EXPERIMENT, OTHER):
        edit(repo / "experiments" / f"{name}.yaml", "train.max_steps", 2)
        edit(repo / "experiments" / f"{name}.yaml", "train.batch_size", 4)
    set_param(repo, "predict.max_rows", 2)
    set_param(repo, "predict.max_new_tokens", 8)
    plan(repo)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = copy_project(tmp_path_factory.mktemp("pipeline"))
    small_settings(repo)
    sh(repo, "git", "init", "-q")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "pipeline under test")
    return repo


def test_full_run_writes_scored_report(repo):
    result = sh(repo, "dvc", "repro")
    assert stages_run(result.stdout) == {"plan"} | {f"config@{e}" for e in (EXPERIMENT, OTHER)} | {
        f"fetch_model@{m}" for m in ("smollm2-135m", "minilm-l6")} | {
        f"{stage}@{d}" for stage in ("download", "convert") for d in ("dialogsum", "phrasebank")} | {
        f"{stage}@{e}" for stage in ("tokenize", "train", "predict_before", "predict_after", "score")
        for e in (EXPERIMENT, OTHER)} | {f"merge@{EXPERIMENT}", "report"}  # no merge for a full fine-tune
    metrics = json.loads((repo / "reports/metrics" / f"{EXPERIMENT}.json").read_text())
    assert metrics["rows"] == 2
    for which in ("before", "after"):
        assert set(metrics[which]) == {"rouge1", "rouge2", "rougeL", "rougeLsum"}
        assert all(0.0 <= v <= 100.0 for v in metrics[which].values())
    head = json.loads((repo / "reports/metrics" / f"{OTHER}.json").read_text())
    assert set(head["after"]) == {"accuracy", "macro_f1", "unparseable", "rows"} and head["after"]["unparseable"] == 0
    report = (repo / "reports/README.md").read_text()
    assert "## dialogue summarization" in report and "## financial sentiment" in report
    assert "| rougeL |" in report and (repo / "reports/plots" / f"{EXPERIMENT}-loss.png").stat().st_size > 1000
    assert (repo / "reports/plots/before-after.png").stat().st_size > 1000
    live = repo / "reports/train" / EXPERIMENT / "live"
    loss = (live / "plots/metrics/train/loss.tsv").read_text().splitlines()
    assert loss[0] == "step\tloss" and len(loss) == 3  # header + 2 steps, logged through DVCLive
    assert set(json.loads((live / "metrics.json").read_text())) == {"train", "eval", "step"}  # validation loss
    assert not (repo / "checkpoints" / EXPERIMENT).exists()  # removed once the result is saved
    adapter = repo / "models/trained" / EXPERIMENT
    assert sorted(p.name for p in adapter.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                         "recipe.json"]
    assert (repo / "models/merged" / EXPERIMENT / "model.safetensors").exists()
    assert json.loads((repo / "models/merged" / EXPERIMENT / "merge_check.json").read_text())["passed"]
    assert not list((repo / "models").rglob("*.bin"))  # safetensors only


def test_merged_model_is_folded_by_shard_and_carries_what_serving_needs(repo):
    merged = repo / "models/merged" / EXPERIMENT
    check = json.loads((merged / "merge_check.json").read_text())
    assert check["by_shard"] and check["max_abs_logit_difference"] <= check["tolerance"]
    names = {p.name for p in merged.iterdir()}
    assert {"tokenizer.json", "tokenizer_config.json", "generation_config.json", "README.md"} <= names
    assert "chat_template.jinja" in names or "chat_template" in (merged / "tokenizer_config.json").read_text()
    card = (merged / "README.md").read_text()
    assert "`smollm2-135m`" in card and "`dialogsum`" in card and str(repo) not in card


def test_predictions_hold_the_prompt_and_their_decoding_settings(repo):
    rows = [json.loads(line) for line in (repo / "data/predictions" / EXPERIMENT / "after.jsonl").read_text().splitlines()]
    assert all(row["prompt"].startswith("<|im_start|>system") and row["prompt"].endswith("<|im_start|>assistant\n")
               for row in rows)  # as the model saw it: SmolLM2's chat template around the instruction
    from tunepipe.devices import inference_dtype

    settings = json.loads((repo / "data/predictions" / EXPERIMENT / "after.settings.json").read_text())
    assert settings == {"rows": 2, "batch_size": 8, "decoding": {"max_new_tokens": 8, "do_sample": False},
                        "dtype": inference_dtype(None, "causal_lm", "lora"),  # float32 on a CPU
                        "prompts_cut_to_fit": 0, "model": "trained"}


def test_chat_streams_the_same_answer_greedy_decoding_gives(repo):
    question = ["--prompt", "Summarize: #Person1#: Where is the station? #Person2#: Two blocks north.",
                "--max-new-tokens", "24"]
    streamed = sh(repo, sys.executable, "-m", "flows.chat", EXPERIMENT, *question)
    whole = sh(repo, sys.executable, "-m", "flows.chat", EXPERIMENT, "--no-stream", *question)
    assert "merged model" in streamed.stderr  # the most finished model by default
    assert streamed.stdout.strip() == whole.stdout.strip() and len(whole.stdout.split()) > 3
    interactive = subprocess.run([sys.executable, "-m", "flows.chat", EXPERIMENT, "--model", "adapter",
                                  "--no-stream", "--max-new-tokens", "24"], cwd=repo, env=ENV, text=True,
                                 capture_output=True, input=question[1] + "\n/exit\n", timeout=300)
    # the adapter on its base answers as its merge does (greedy, logits within the merge tolerance)
    assert interactive.returncode == 0 and interactive.stdout.removeprefix("> ").strip().startswith(
        whole.stdout.strip()[:20])


def test_second_run_runs_nothing_and_status_is_clean(repo):
    result = sh(repo, "dvc", "repro")
    assert stages_run(result.stdout) == set()
    assert "didn't change, skipping" in result.stdout
    status = sh(repo, "dvc", "status")
    assert "Data and pipelines are up to date" in status.stdout


def test_training_param_reruns_exactly_train_and_what_follows(repo):
    before = predictions(repo)
    set_param(repo, "train.lora.r", 4)
    result = sh(repo, "dvc", "repro")
    # score re-runs only if the new model's predictions differ: DVC compares content, not timestamps
    rescored = {f"score@{EXPERIMENT}"} if predictions(repo) != before else set()
    assert stages_run(result.stdout) == EDITED | AFTER_TRAIN | rescored  # nothing of the other experiment
    assert f"Stage 'tokenize@{EXPERIMENT}' didn't change" in result.stdout
    assert f"Stage 'train@{OTHER}' didn't change" in result.stdout


def test_tokenize_param_reruns_tokenize_onwards_but_not_convert_or_download(repo):
    before = predictions(repo)
    set_param(repo, "tokenize.system_prompt", "You summarize dialogues in one sentence.")
    result = sh(repo, "dvc", "repro")
    rescored = {f"score@{EXPERIMENT}"} if predictions(repo) != before else set()
    assert stages_run(result.stdout) == EDITED | AFTER_TRAIN | {f"tokenize@{EXPERIMENT}",
                                                               f"predict_before@{EXPERIMENT}"} | rescored
    assert "Stage 'convert@dialogsum' didn't change" in result.stdout
    assert "Stage 'download@dialogsum' didn't change" in result.stdout


def test_labels_mask_exactly_the_prompt_with_the_real_chat_template(repo):
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(repo / "models/base/smollm2-135m")
    rows = load_from_disk(str(repo / "data/tokenized" / EXPERIMENT / "train")).to_list()
    converted = {json.loads(line)["id"]: json.loads(line)
                 for line in (repo / "data/converted/dialogsum/train.jsonl").read_text().splitlines()}
    for row in rows[:5]:
        cut = row["prompt_length"]
        assert row["labels"][:cut] == [-100] * cut and row["labels"][cut:] == row["input_ids"][cut:]
        prompt = tokenizer.decode(row["input_ids"][:cut])
        assert prompt.endswith("<|im_start|>assistant\n") and converted[row["id"]]["input"] in prompt
        # the model learns the answer and the end of its turn, nothing of the prompt
        assert tokenizer.decode(row["input_ids"][cut:]) == converted[row["id"]]["output"] + "<|im_end|>\n"
    system = json.loads((repo / "data/config" / EXPERIMENT / "tokenize.json").read_text())["tokenize"].get("system_prompt")
    for row in rows:  # the batched encoder gives what the chat template gives each row alone
        record = converted[row["id"]]
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": f"{record['instruction']}\n\n{record['input']}".strip()}]
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)["input_ids"]
        full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": record["output"]}],
                                             tokenize=True)["input_ids"]
        assert (row["input_ids"], row["prompt_length"]) == (full, len(prompt))


def test_forced_retrain_gives_byte_identical_adapter(repo):
    adapter = repo / "models/trained" / EXPERIMENT
    before = {p.name: p.read_bytes() for p in adapter.iterdir()}
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "results")
    sh(repo, "dvc", "repro", "-f", "-s", f"train@{EXPERIMENT}")  # a new process: a new Python hash seed
    assert {p.name: p.read_bytes() for p in adapter.iterdir()} == before  # seeded, threads pinned, sorted config
    assert f"merge@{EXPERIMENT}" not in sh(repo, "dvc", "status").stdout  # so nothing downstream is stale
    # the run leaves git's working tree as it found it: wall-clock timings are neither in git nor in dvc.lock
    assert (repo / "reports/speed" / f"{EXPERIMENT}.json").exists()
    assert sh(repo, "git", "status", "--porcelain").stdout == ""


def test_test_only_data_change_regenerates_but_never_retrains(repo):
    test_file = repo / "data/samples/dialogsum/sample.test.jsonl"
    row = json.loads(test_file.read_text().splitlines()[0])
    row["fname"] = "test_extra"
    with open(test_file, "a") as handle:
        handle.write(json.dumps(row) + "\n")
    result = sh(repo, "dvc", "repro")
    ran = stage_names(result.stdout)
    assert {"download", "convert", "tokenize", "predict_before", "predict_after"} <= ran
    assert not ran & {"fetch_model", "train", "merge"}  # the train split's bytes did not change


def test_two_exp_run_variants_show_with_validation_loss_and_plot_their_curves(repo):
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "baseline results")
    for rank in (8, 2):
        sh(repo, "dvc", "exp", "run", "-n", f"rank{rank}", "-S", f"experiments/{EXPERIMENT}.yaml:train.lora.r={rank}")
    shown = json.loads(sh(repo, "dvc", "exp", "show", "--json").stdout)
    runs = [shown[0]] + [exp for entry in shown for exp in (entry.get("experiments") or [])]
    rouge, validation = {}, {}
    for run in runs:
        for revision in run.get("revs", []) if "revs" in run else [run]:
            data = revision.get("data") or {}
            name = revision.get("name") or run.get("name") or data.get("rev")
            found = data.get("metrics", {})
            scores = found.get(f"reports/metrics/{EXPERIMENT}.json", {}).get("data", {})
            live = found.get(f"reports/train/{EXPERIMENT}/live/metrics.json", {}).get("data", {})
            if scores:
                rouge[name] = scores["after"]["rougeL"]
                validation[name] = live["eval"]["loss"]
            # bookkeeping (ledgers, token counts, timings, training totals) is not among the metrics: the
            # scores and the final training and validation losses are
            assert set(found) <= {f"reports/{folder}" for e in (EXPERIMENT, OTHER)
                                  for folder in (f"metrics/{e}.json", f"train/{e}/live/metrics.json")}
    assert {"rank8", "rank2"} <= set(rouge) and validation["rank8"] != validation["rank2"], shown
    table = sh(repo, "dvc", "exp", "show", "--no-pager", "--md", "--only-changed").stdout  # the README's command
    header = table.splitlines()[0]
    assert "rank8" in table and "train.lora.r" in header and "ledger" not in header
    assert "eval.loss" in header and "learning_rate" not in header  # unchanged columns are hidden
    plots = sh(repo, "dvc", "plots", "diff", "rank8", "rank2", "--json").stdout  # both runs' curves
    curve = f"reports/train/{EXPERIMENT}/live/plots/metrics/eval/loss.tsv"
    assert curve in plots and '"rank8"' in plots and '"rank2"' in plots


def test_convert_and_tokenize_bytes_survive_touched_and_moved_inputs(repo, tmp_path):
    def digest(root: Path) -> dict[str, str]:
        import hashlib
        outs = [root / "data/converted/dialogsum", root / "data/tokenized" / EXPERIMENT]
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for out in outs for p in sorted(out.rglob("*")) if p.is_file()}

    before = digest(repo)
    assert any(name.endswith(".arrow") for name in before)
    for raw in (repo / "data/raw/dialogsum").iterdir():
        os.utime(raw, (1, 1))  # touched: new mtimes, same bytes
    sh(repo, "dvc", "repro", "-f", "-s", "convert@dialogsum")
    sh(repo, "dvc", "repro", "-f", "-s", f"tokenize@{EXPERIMENT}")
    assert digest(repo) == before
    moved = tmp_path / "elsewhere"  # copied elsewhere: other absolute paths, same bytes
    shutil.copytree(repo, moved, symlinks=False, ignore=shutil.ignore_patterns(".dvc"))
    shutil.copytree(repo / ".dvc", moved / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp"))
    sh(moved, sys.executable, "-m", "stages.convert", "dialogsum")
    sh(moved, sys.executable, "-m", "stages.tokenize", EXPERIMENT)
    assert digest(moved) == before


def test_hub_source_offline_fails_fast_with_one_clear_line(repo):
    env = {k: v for k, v in ENV.items() if k != "HF_HUB_OFFLINE"}
    params = read_yaml(repo / "params.yaml")
    params["models"]["hub-model"] = {"source": "hub", "repo_id": "tunepipe-test/no-such-model", "revision": "0" * 40}
    scratch = repo.parent / "hub-check"
    scratch.mkdir(exist_ok=True)
    (scratch / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run([sys.executable, "-m", "stages.fetch_model", "hub-model"], cwd=scratch, env={
        **env, "PYTHONPATH": str(repo)}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot "), result.stderr
    assert "no-such-model" in lines[0] and "source" in lines[0] and "Traceback" not in result.stderr
    assert not (scratch / "models/base/hub-model").exists()


def test_a_fresh_clone_pulls_from_the_default_remote_and_runs_no_stage(repo, tmp_path):
    """The remote in .dvc/config (a folder beside the checkout) works on a fresh clone: push, clone, pull, and
    `dvc repro` has nothing to do; every output is byte-identical, and a model sits once on disk."""
    sh(repo, "dvc", "repro")  # whatever the tests above left, brought up to date
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "results to share")
    sh(repo, "dvc", "push")
    assert any((repo.parent / "tunepipe-dvc-remote").rglob("*")), "the default remote is not beside the checkout"

    sh(repo.parent, "git", "clone", "-q", str(repo), "teammate")  # beside it, as the remote's relative url expects
    clone = repo.parent / "teammate"
    sh(clone, "dvc", "pull")
    assert stages_run(sh(clone, "dvc", "repro").stdout) == set()
    assert json.loads(sh(clone, "dvc", "status", "--json").stdout) == {}
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    outputs = {out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])}
    files = [p.relative_to(repo) for out in outputs for p in sorted((repo / out).rglob("*") if (repo / out).is_dir()
                                                                     else [repo / out]) if p.is_file()]
    assert len(files) > 50
    for name in files:
        assert (clone / name).read_bytes() == (repo / name).read_bytes(), name

    weights = next((clone / "models/base/smollm2-135m").rglob("*.safetensors"))
    cached = {p.stat().st_ino for p in (clone / ".dvc/cache").rglob("*") if p.is_file()}
    assert weights.stat().st_ino in cached  # linked from DVC's cache, not a second copy (cache.type in .dvc/config)

    # the documented switch: merged models (rebuilt from the adapter in minutes) stay out of a remote
    from flows.retrain import push_targets

    lean = tmp_path / "lean-remote"
    sh(repo, "dvc", "remote", "add", "lean", str(lean))
    sh(repo, "dvc", "push", "-r", "lean", *push_targets(str(repo), push_merged=False))
    missing = json.loads(sh(repo, "dvc", "status", "--cloud", "-r", "lean", "--json").stdout)
    assert missing and all(path.startswith(f"models/merged/{EXPERIMENT}") for path in missing), missing
