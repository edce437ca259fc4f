"""GLUE as users have it: every task's files as distributed, its official metric, the split names they type."""

import json
import random
from pathlib import Path

import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef

from conftest import SHARED_DATA
from layerdrop.cli import main
from layerdrop.data.glue import TASKS, load_glue, resolve_task
from layerdrop.errors import UserError
from layerdrop.tasks.glue_metrics import glue_metrics

WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "and", "it", "was", "good", "bad"]
BOM = "\ufeff"


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7)))


def _label(task: str, rng: random.Random) -> str:
    return {"STS-B": f"{rng.uniform(0, 5):.3f}", "MNLI": rng.choice(["entailment", "neutral", "contradiction"]),
            "QNLI": rng.choice(["entailment", "not_entailment"]), "RTE": rng.choice(["entailment", "not_entailment"])
            }.get(task, rng.choice(["0", "1"]))


def _row(task: str, i: int, rng: random.Random, labelled: bool) -> list[str]:
    a, b = _sentence(rng), _sentence(rng)
    label = _label(task, rng)
    if task == "CoLA":
        return ["gj04", label, "" if label == "1" else "*", a] if labelled else [str(i), a]
    if task == "SST-2":
        return [a, label] if labelled else [str(i), a]
    if task == "MRPC":
        return [label, str(1000 + i), str(2000 + i), a, b] if labelled else [str(i), str(1000 + i), str(2000 + i), a, b]
    if task == "STS-B":
        return [str(i), "main-captions", "MSRvid", "2012test", f"{i:04d}", "none", "none", a, b] + ([label] if labelled else [])
    if task == "QQP":
        return [str(i), str(2 * i), str(2 * i + 1), a, b, label] if labelled else [str(i), a, b]
    if task == "MNLI":
        parses = [f"( {a} )", f"( {b} )", f"(ROOT {a})", f"(ROOT {b})"]
        base = [str(i), str(100 + i), f"{100 + i}e", "fiction", *parses, a, b]
        return base + [label, label] if labelled else base
    return [str(i), a, b] + ([label] if labelled else [])  # QNLI, RTE, WNLI


HEADERS = {
    "CoLA": (None, ["index", "sentence"]),
    "SST-2": (["sentence", "label"], ["index", "sentence"]),
    "MRPC": (["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"], ["index", "#1 ID", "#2 ID", "#1 String", "#2 String"]),
    "STS-B": (["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score"],
              ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2"]),
    "QQP": (["id", "qid1", "qid2", "question1", "question2", "is_duplicate"], ["id", "question1", "question2"]),
    "MNLI": (["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse", "sentence1_parse",
              "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"],
             ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse", "sentence1_parse",
              "sentence2_parse", "sentence1", "sentence2"]),
    "QNLI": (["index", "question", "sentence", "label"], ["index", "question", "sentence"]),
    "RTE": (["index", "sentence1", "sentence2", "label"], ["index", "sentence1", "sentence2"]),
    "WNLI": (["index", "sentence1", "sentence2", "label"], ["index", "sentence1", "sentence2"]),
}


def write_glue(root: Path, task: str, rows: int = 40, seed: int = 0) -> Path:
    """A tiny task directory in the layout the GLUE download script writes (BOM for MRPC, no header for CoLA)."""
    rng = random.Random(seed)
    directory = root / task
    directory.mkdir(parents=True)
    train_header, test_header = HEADERS[task]
    info = TASKS[task]
    files = {"train.tsv": (True, rows), **{name: (True, rows // 2) for name in info.dev},
             **{name: (False, rows // 4) for name in info.test}}
    for name, (labelled, count) in files.items():
        header = train_header if labelled else test_header
        lines = [] if header is None else ["\t".join(header)]
        lines += ["\t".join(_row(task, i, rng, labelled)) for i in range(count)]
        if task == "MNLI" and name.startswith("dev"):  # dev files carry five annotator labels before gold_label
            lines[0] = lines[0].replace("label1\tgold_label", "label1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label")
            lines[1:] = [line.rsplit("\t", 1)[0] + "\tx\tx\tx\tx\t" + line.rsplit("\t", 1)[1] for line in lines[1:]]
        text = "\n".join(lines) + "\n"
        (directory / name).write_text((BOM if task == "MRPC" else "") + text, encoding="utf-8")
    return directory


@pytest.mark.parametrize("task", list(TASKS))
def test_each_task_is_detected_from_its_files_and_read_as_distributed(tmp_path, task):
    directory = write_glue(tmp_path, task)
    assert resolve_task(directory, None).name == task
    (train,) = load_glue(directory, "train")
    assert len(train) == 40 and not train.skipped
    assert all(len(t) == len(TASKS[task].text) for t in train.texts)
    assert not any(BOM in part for texts in train.texts for part in texts)
    dev = load_glue(directory, "dev")
    assert [d.file.name for d in dev] == list(TASKS[task].dev) and all(d.labels for d in dev)
    assert [e.file.name for e in load_glue(directory, "valid")] == [d.file.name for d in dev]
    test = load_glue(directory, "test")
    assert all(t.labels is None and t.ids[:2] == ["0", "1"] for t in test)
    if task == "STS-B":
        assert all(isinstance(label, float) for label in train.labels)


def test_a_byte_order_mark_never_reaches_a_column_name(tmp_path):
    directory = write_glue(tmp_path, "MRPC")
    assert (directory / "train.tsv").read_bytes().startswith(BOM.encode())
    (train,) = load_glue(directory, "train")
    assert set(train.labels) == {"0", "1"}


def test_mnli_splits_by_the_names_users_type(tmp_path):
    directory = write_glue(tmp_path, "MNLI")
    assert [e.file.name for e in load_glue(directory, "dev_matched")] == ["dev_matched.tsv"]
    assert [e.file.name for e in load_glue(directory, "dev_mismatched")] == ["dev_mismatched.tsv"]
    assert [e.file.name for e in load_glue(directory, "test_mismatched")] == ["test_mismatched.tsv"]
    with pytest.raises(UserError, match="SST-2 has one dev file"):
        load_glue(write_glue(tmp_path, "SST-2"), "dev_matched")


def test_malformed_qqp_rows_are_skipped_and_counted(tmp_path, capsys):
    directory = write_glue(tmp_path, "QQP")
    lines = (directory / "train.tsv").read_text().splitlines()
    lines.insert(3, "17\t34\t35\ta question cut short")  # as in the real QQP files
    lines.insert(6, "18\t36\t37\tq1\tq2\tnot-a-label-but-present")
    lines.insert(8, "19\t38\t39\tq1\tq2\t")  # no label
    (directory / "train.tsv").write_text("\n".join(lines) + "\n")
    (train,) = load_glue(directory, "train")
    assert train.skipped == [4, 7, 9] and len(train) == 40  # a stray label would have become a third class
    from layerdrop.tasks.classification import report_skipped

    report_skipped(train)
    assert "skipped 3 malformed row(s) (lines 4, 7, 9)" in capsys.readouterr().out


def test_a_layout_that_matches_no_task_is_refused_with_the_columns_and_the_layouts(tmp_path):
    (tmp_path / "train.tsv").write_text("text\ttarget\nhello\t1\n")
    with pytest.raises(UserError, match=r"has columns \['text', 'target'\], which match no GLUE task; layouts known: CoLA"):
        resolve_task(tmp_path, None)
    with pytest.raises(UserError, match="--glue-task: got 'MNLI-m'; valid: CoLA, SST-2"):
        resolve_task(tmp_path, "MNLI-m")
    write_glue(tmp_path, "RTE")
    with pytest.raises(UserError, match=r"the SST-2 layout needs sentence, label \(missing: sentence\)"):
        load_glue(tmp_path / "RTE", "train", "SST-2")


def test_official_metrics_match_the_libraries():
    predictions, labels = [1, 0, 1, 1, 0, 0, 1], [1, 0, 0, 1, 0, 1, 1]
    metrics = glue_metrics(("accuracy", "f1", "mcc"), predictions, labels)
    assert metrics["accuracy"] == pytest.approx(100 * 5 / 7)
    assert metrics["f1"] == pytest.approx(100 * f1_score(labels, predictions))
    assert metrics["mcc"] == pytest.approx(100 * matthews_corrcoef(labels, predictions))
    scores, gold = [0.5, 2.0, 3.5, 4.0, 1.0], [0.0, 2.5, 3.0, 5.0, 1.5]
    correlations = glue_metrics(("pearson", "spearman"), scores, gold)
    assert correlations["pearson"] == pytest.approx(100 * pearsonr(scores, gold)[0])
    assert correlations["spearman"] == pytest.approx(100 * spearmanr(scores, gold)[0])
    assert glue_metrics(("pearson",), [1.0, 1.0], [0.0, 2.0]) == {"pearson": 0.0}  # constant predictions


TINY = ["--encoder-layers", "4", "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--encoder-attention-heads",
        "2", "--tokens-per-sample", "32", "--batch-size", "8", "--bpe-vocab-size", "300", "--warmup-updates", "2",
        "--no-progress-bar", "--max-update", "6", "--validate-interval-updates", "3"]


def _train(directory: Path, save_dir: Path, *extra: str) -> Path:
    assert main(["train", "--task", "classification", "--data", str(directory), "--save-dir", str(save_dir), *TINY, *extra]) == 0
    return save_dir / "checkpoint_last"


@pytest.mark.parametrize("task", ["CoLA", "STS-B", "MNLI", "MRPC"])
def test_fine_tune_and_eval_report_the_official_metric_and_write_json(tmp_path, capsys, task):
    directory = write_glue(tmp_path, task)
    checkpoint = _train(directory, tmp_path / "run", "--encoder-layerdrop", "0.5")
    out = capsys.readouterr().out
    names = TASKS[task].metrics
    assert f"{task}, 40 train examples" in out
    assert all(f"{name} " in out for name in names) and "best score" in out
    if task == "MNLI":
        assert "mm_accuracy" in out
    report = tmp_path / "dev.json"
    assert main(["eval", "--path", str(checkpoint), "--split", "dev", "--json", str(report),
                 "--encoder-layers-to-keep", "0,2"]) == 0
    printed = capsys.readouterr().out
    assert f"{task} ({', '.join(names)}, in percent)" in printed
    result = json.loads(report.read_text())
    assert result["split"] == "dev" and result["task"] == task and result["kept_layers"] == {"encoder": [0, 2]}
    assert list(result["results"]) == list(TASKS[task].dev) and result["parameters"] > 0
    for metrics in result["results"].values():
        assert set(names) <= set(metrics) and metrics["examples"] == 20
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["glue_task"] == task
    if task == "STS-B":
        assert config["num_classes"] == 1 and config["label_names"] is None
        low, high = config["regression_range"]
        assert 0 <= low < high <= 5


def test_the_test_split_writes_predictions_in_the_glue_server_format(tmp_path, capsys):
    for task, expected in (("MNLI", ["MNLI-m.tsv", "MNLI-mm.tsv"]), ("STS-B", ["STS-B.tsv"])):
        directory = write_glue(tmp_path, task)
        checkpoint = _train(directory, tmp_path / f"run-{task}")
        out_dir = tmp_path / f"predictions-{task}"
        assert main(["eval", "--path", str(checkpoint), "--split", "test", "--predictions-dir", str(out_dir)]) == 0
        assert sorted(p.name for p in out_dir.iterdir()) == expected
        lines = (out_dir / expected[0]).read_text().splitlines()
        assert lines[0] == "index\tprediction" and len(lines) == 11 and lines[1].startswith("0\t")
        values = [line.split("\t")[1] for line in lines[1:]]
        if task == "MNLI":
            assert set(values) <= {"entailment", "neutral", "contradiction"}
        else:
            low, high = json.loads((checkpoint / "config.json").read_text())["regression_range"]
            assert all(low <= float(v) <= high for v in values)  # clipped to the label range


def test_the_best_checkpoint_is_chosen_by_the_glue_score_not_the_loss(tmp_path, capsys):
    directory = write_glue(tmp_path, "CoLA")
    save_dir = tmp_path / "run"
    _train(directory, save_dir, "--max-update", "12")
    log = capsys.readouterr().out
    scores = {int(line.split()[4].rstrip(":")): float(line.split("| score ")[1].split()[0])
              for line in log.splitlines() if line.startswith("| valid at update")}
    best_update = max(scores, key=lambda u: (scores[u], -u))  # the first to reach the highest score
    best = json.loads((save_dir / "checkpoint_best" / "run.json").read_text())
    import torch

    state = torch.load(save_dir / "checkpoint_best" / "trainer_state.pt", weights_only=True)
    assert state["update"] == best_update and state["best_valid_loss"] == pytest.approx(scores[best_update], abs=5e-3)
    assert best["task"] == "classification"


def test_dev_is_a_split_name_for_every_task(tmp_path, capsys):
    from conftest import TINY_TRAIN, write_corpus

    corpus = write_corpus(tmp_path / "corpus")
    assert main(["train", "--data", str(corpus), "--save-dir", str(tmp_path / "lm"), "--max-update", "2", *TINY_TRAIN]) == 0
    capsys.readouterr()
    assert main(["eval", "--path", str(tmp_path / "lm" / "checkpoint_last"), "--split", "dev", "--max-valid-steps", "2",
                 "--json", str(tmp_path / "lm.json")]) == 0
    result = json.loads((tmp_path / "lm.json").read_text())
    assert result["split"] == "dev" and result["results"]["lm"]["loss"] > 0


@pytest.mark.skipif(not (SHARED_DATA / "glue").is_dir(), reason="../shared/data not present")
def test_the_shipped_glue_copies_are_detected():
    assert resolve_task(SHARED_DATA / "glue" / "SST-2", None).name == "SST-2"
    assert resolve_task(SHARED_DATA / "glue" / "RTE", None).name == "RTE"


@pytest.mark.parametrize("task", list(TASKS))
def test_each_task_trains_with_its_loss_and_validates_with_its_metric(tmp_path, task):
    import math

    import torch

    from layerdrop.models.encoder import TransformerEncoderModel
    from layerdrop.tasks.classification import ClassificationTask
    from layerdrop.train import TrainConfig

    directory = write_glue(tmp_path, task)
    glue = ClassificationTask(TrainConfig(task="classification", data=str(directory), bpe_vocab_size=300, batch_size=8),
                              log=lambda _: None)
    tokenizer = glue.build_tokenizer()
    config = glue.new_config({"encoder_layers": 2, "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 64,
                              "encoder_attention_heads": 2, "tokens_per_sample": 32}, tokenizer)
    model = TransformerEncoderModel(config)
    glue.prepare(tokenizer, config)
    batch = glue.train_batch(torch.Generator().manual_seed(0), 0)
    out = glue.train_outputs(model, batch)
    assert math.isfinite(out.loss.item())
    if TASKS[task].regression:  # one output trained by mean squared error
        assert out.logits.shape == (8, 1) and batch[1].dtype == torch.float32
        assert out.loss.item() == pytest.approx(((out.logits.squeeze(-1) - batch[1]) ** 2).mean().item(), rel=1e-5)
    else:
        assert out.logits.shape == (8, len(glue.label_names))
    metrics = glue.validate(model)
    assert set(TASKS[task].metrics) <= set(metrics) and "score" in metrics and "loss" in metrics
    if task == "MNLI":
        assert "mm_accuracy" in metrics


def test_a_test_file_must_be_complete_and_is_never_truncated(tmp_path, capsys):
    directory = write_glue(tmp_path, "SST-2")
    checkpoint = _train(directory, tmp_path / "run")
    capsys.readouterr()
    argv = ["eval", "--path", str(checkpoint), "--split", "test", "--predictions-dir", str(tmp_path / "out")]
    assert main([*argv, "--max-valid-steps", "1"]) == 2
    assert "needs every row" in capsys.readouterr().err
    with open(directory / "test.tsv", "a") as f:
        f.write("99\ttoo\tmany\tfields\n")
    assert main(argv) == 2
    assert "line 12 has 4 fields" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_mnli_trains_with_only_dev_matched(tmp_path, capsys):
    directory = write_glue(tmp_path, "MNLI")
    (directory / "dev_mismatched.tsv").unlink()
    _train(directory, tmp_path / "run")
    out = capsys.readouterr().out
    assert "20 dev examples" in out and "mm_accuracy" not in out


def test_a_classifier_saved_before_tasks_were_recorded_resumes(tmp_path, capsys):
    import torch

    directory = write_glue(tmp_path, "SST-2")
    save_dir = tmp_path / "run"
    checkpoint = _train(directory, save_dir)
    config = json.loads((checkpoint / "config.json").read_text())
    config.pop("glue_task"), config.pop("regression_range")
    (checkpoint / "config.json").write_text(json.dumps(config))
    state = torch.load(checkpoint / "trainer_state.pt", weights_only=True)
    state.pop("best_metric")
    state["best_valid_loss"] = 0.45  # a loss, as old runs stored it
    torch.save(state, checkpoint / "trainer_state.pt")
    capsys.readouterr()
    assert main(["train", "--task", "classification", "--data", str(directory), "--save-dir", str(save_dir), *TINY,
                 "--max-update", "9"]) == 0
    assert "resuming at update 6" in capsys.readouterr().out
    resumed = torch.load(save_dir / "checkpoint_last" / "trainer_state.pt", weights_only=True)
    assert resumed["best_metric"] == "score" and resumed["best_valid_loss"] > 1  # a score now, not the old loss
    assert json.loads((save_dir / "checkpoint_last" / "config.json").read_text())["glue_task"] == "SST-2"


@pytest.mark.parametrize("task", ["SST-2", "STS-B"])
def test_validation_on_examples_held_out_of_train_never_reads_dev(tmp_path, capsys, task):
    """GLUE's test labels are private, so dev is the reported split: --valid-from-train keeps it out of training."""
    from layerdrop.tasks.classification import hold_out

    directory = write_glue(tmp_path, task)
    for name in TASKS[task].dev:
        (directory / name).write_text("not a GLUE file\n")  # any read of dev would now fail
    _train(directory, tmp_path / "run", "--valid-from-train", "10", "--seed", "3")
    out = capsys.readouterr().out
    assert f"{task}, 30 train examples" in out and "validating on 10 held out of train.tsv (dev unseen)" in out
    assert "| valid at update" in out and (tmp_path / "run" / "checkpoint_best").is_dir()
    (examples,) = load_glue(directory, "train")
    kept, held = hold_out(examples, 10)
    again_kept, again_held = hold_out(examples, 10)
    assert held.texts == again_held.texts and held.labels == again_held.labels  # one fixed draw
    assert sorted(kept.texts + held.texts) == sorted(examples.texts) and len(held) == 10
    assert hold_out(examples, 0) == (examples, None)


def test_valid_from_train_errors_name_the_flag(tmp_path, capsys):
    directory = write_glue(tmp_path, "SST-2")
    for extra, message in ((["--valid-from-train", "40"], "--valid-from-train: got 40; valid: fewer than train.tsv's 40"),
                           (["--valid-from-train", "-1"], "--valid-from-train: got -1; valid: an integer from 0")):
        assert main(["train", "--task", "classification", "--data", str(directory), "--save-dir", str(tmp_path / "x"),
                     *TINY, *extra]) == 2
        assert message in capsys.readouterr().err
    assert main(["train", "--save-dir", str(tmp_path / "lm"), "--valid-from-train", "5", "--max-update", "1"]) == 2
    assert "--valid-from-train: only --task classification" in capsys.readouterr().err


def test_a_resume_keeps_its_held_out_examples_out_of_training(tmp_path, capsys):
    directory = write_glue(tmp_path, "SST-2")
    _train(directory, tmp_path / "run", "--valid-from-train", "10", "--max-update", "2")
    for changed in ([], ["--valid-from-train", "5"]):
        assert main(["train", "--task", "classification", "--data", str(directory), "--save-dir", str(tmp_path / "run"),
                     *TINY, "--max-update", "4", *changed]) == 2
        assert "--valid-from-train: got" in capsys.readouterr().err
    _train(directory, tmp_path / "run", "--valid-from-train", "10", "--max-update", "4")
    assert "resuming at update 2" in capsys.readouterr().out


def test_the_head_knows_every_label_of_train_tsv_even_when_one_is_held_out(tmp_path):
    import torch

    from layerdrop.tasks.classification import ClassificationTask, hold_out
    from layerdrop.train import TrainConfig

    directory = write_glue(tmp_path, "MNLI", rows=40)
    (examples,) = load_glue(directory, "train")
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(0)).tolist()
    rows = (directory / "train.tsv").read_text().splitlines()
    rare = order[0]  # the first example hold_out holds out: make it the only "neutral"
    fields = [row.split("\t") for row in rows[1:]]
    for i, row in enumerate(fields):
        row[-1] = "neutral" if i == rare else ("entailment" if i % 2 else "contradiction")
    (directory / "train.tsv").write_text("\n".join([rows[0], *("\t".join(row) for row in fields)]) + "\n")
    task = ClassificationTask(TrainConfig(task="classification", data=str(directory), tokenizer="bpe", valid_from_train=1),
                              log=lambda *_: None)
    assert task.held_out.labels == ["neutral"] and "neutral" not in task.train_examples.labels
    assert task.label_names == ["contradiction", "entailment", "neutral"]
