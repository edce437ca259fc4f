"""LayerDrop, pruning and saving for Hugging Face models, on tiny randomly initialised configs of each family."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from layerdrop.errors import UserError  # noqa: E402
from layerdrop.integrations.hf import FAMILIES, apply_layerdrop, layer_lists, prune, remove_layerdrop  # noqa: E402
from layerdrop.nn.drop_plan import draw_stack_plan  # noqa: E402

VOCAB = 96


def tiny(family: str, layers: int = 4):
    T = transformers
    small = dict(hidden_size=32, num_attention_heads=2, intermediate_size=64, vocab_size=VOCAB)
    decoder = dict(small, num_key_value_heads=1, num_hidden_layers=layers, max_position_embeddings=64)
    configs = {
        "gpt2": (T.GPT2Config(n_layer=layers, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=64, bos_token_id=0,
                              eos_token_id=1), T.GPT2LMHeadModel),
        "bert": (T.BertConfig(num_hidden_layers=layers, **small), T.BertForMaskedLM),
        "roberta": (T.RobertaConfig(num_hidden_layers=layers, **small), T.RobertaForMaskedLM),
        "llama": (T.LlamaConfig(**decoder), T.LlamaForCausalLM),
        "mistral": (T.MistralConfig(**decoder, sliding_window=6), T.MistralForCausalLM),
        "qwen2": (T.Qwen2Config(**decoder, use_sliding_window=True, sliding_window=6, max_window_layers=2),
                  T.Qwen2ForCausalLM),
        "opt": (T.OPTConfig(num_hidden_layers=layers, hidden_size=32, num_attention_heads=2, ffn_dim=64, vocab_size=VOCAB,
                            word_embed_proj_dim=32, max_position_embeddings=64, layerdrop=0.3), T.OPTForCausalLM),
        "bart": (T.BartConfig(encoder_layers=2, decoder_layers=layers, d_model=32, encoder_attention_heads=2,
                              decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, vocab_size=VOCAB,
                              max_position_embeddings=64, encoder_layerdrop=0.3, decoder_layerdrop=0.3),
                 T.BartForConditionalGeneration),
    }
    config, cls = configs[family]
    torch.manual_seed(0)
    return cls(config).eval()


def inputs(family: str, length: int = 10) -> dict:
    ids = torch.randint(2, VOCAB, (2, length), generator=torch.Generator().manual_seed(1))
    return {"input_ids": ids, "decoder_input_ids": ids.flip(1)} if family == "bart" else {"input_ids": ids}


def reference_through(model, keep: dict):
    """An independent reference: a copy whose layer lists hold only the kept layers (no cache; layer_idx untouched)."""
    ref = copy.deepcopy(model)
    for stack, layers in layer_lists(ref).items():
        if stack in keep:
            layers_kept = torch.nn.ModuleList([layers[i] for i in keep[stack]])
            parent_name, _, attr = [n for n, m in ref.named_modules() if m is layers][0].rpartition(".")
            setattr(ref.get_submodule(parent_name), attr, layers_kept)
            for field in FAMILIES[ref.config.model_type].layer_counts[stack]:
                setattr(ref.config, field, len(keep[stack]))
            if getattr(ref.config, "layer_types", None):  # the masks are chosen by position in this list
                ref.config.layer_types = [ref.config.layer_types[i] for i in keep[stack]]
    return ref


DECODERS = ["gpt2", "llama", "mistral", "qwen2", "opt", "bart"]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_pruned_logits_equal_the_original_through_the_kept_layers(family):
    model = tiny(family)
    stack = "decoder" if family in DECODERS else "encoder"
    keep = {stack: [0, 2, 3]}
    pruned = prune(model, keep if family == "bart" else "0,2,3")
    assert len(layer_lists(pruned)[stack]) == 3 and pruned.config.layerdrop_kept_layers == {stack: [0, 2, 3]}
    assert len(layer_lists(model)[stack]) == 4  # the original is untouched
    with torch.no_grad():
        got = pruned(**inputs(family), use_cache=False).logits
        want = reference_through(model, keep)(**inputs(family), use_cache=False).logits
        full = model(**inputs(family), use_cache=False).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, full, atol=1e-3)  # pruning changed something


def test_pruning_twice_composes_and_per_layer_lists_follow():
    model = tiny("qwen2", layers=6)
    assert model.config.layer_types == ["full_attention"] * 2 + ["sliding_attention"] * 4
    once = prune(model, [0, 1, 3, 5])
    twice = prune(once, [1, 2])
    assert twice.config.layerdrop_kept_layers == {"decoder": [1, 3]}
    assert twice.config.layer_types == ["full_attention", "sliding_attention"]
    assert [layer.self_attn.layer_idx for layer in twice.model.layers] == [0, 1]


@pytest.mark.parametrize("family", DECODERS)
def test_generation_with_the_kv_cache_after_pruning_equals_the_uncached_model(family):
    pruned = prune(tiny(family, layers=5), {"decoder": [0, 2, 4]} if family == "bart" else [0, 2, 4])
    prompt = inputs(family, length=5)["input_ids"][:1]
    settings = dict(max_new_tokens=8, do_sample=False, output_scores=True, return_dict_in_generate=True,
                    pad_token_id=0, min_new_tokens=8)
    cached = pruned.generate(prompt, use_cache=True, **settings)
    uncached = pruned.generate(prompt, use_cache=False, **settings)
    assert cached.sequences.tolist() == uncached.sequences.tolist()
    for a, b in zip(cached.scores, uncached.scores):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_save_pretrained_loads_in_plain_transformers_without_layerdrop(tmp_path):
    cases = []
    for family in ("llama", "bart", "bert"):
        model = tiny(family)
        apply_layerdrop(model, p=0.5)
        remove_layerdrop(model)
        pruned = prune(model, {"decoder": [1, 3]} if family == "bart" else [1, 3])
        pruned.save_pretrained(tmp_path / family)
        batch = inputs(family)
        with torch.no_grad():
            torch.save({"batch": batch, "logits": pruned(**batch).logits}, tmp_path / family / "expected.pt")
        cases.append((type(pruned).__name__, str(tmp_path / family)))
        saved = json.loads((tmp_path / family / "config.json").read_text())
        assert saved["layerdrop_kept_layers"] == {"encoder" if family == "bert" else "decoder": [1, 3]}
    script = f"""
import sys, torch
sys.modules["layerdrop"] = None  # any import of layerdrop now fails
import transformers
for name, path in {cases!r}:
    model = getattr(transformers, name).from_pretrained(path).eval()
    expected = torch.load(path + "/expected.pt")
    with torch.no_grad():
        got = model(**expected["batch"]).logits
    torch.testing.assert_close(got, expected["logits"], rtol=1e-5, atol=1e-5)
"""
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)


@pytest.mark.parametrize("family", ["gpt2", "roberta", "opt", "bart"])
def test_apply_layerdrop_drops_at_rate_p_in_training_and_nothing_in_eval(family):
    model = tiny(family)
    handle = apply_layerdrop(model, p=0.3, seed=5)
    for name in FAMILIES[family].own_layerdrop:
        assert getattr(model.config, name) == 0.0  # the family's own LayerDrop is off: layers drop once
    runs = {stack: [0] * len(layers) for stack, layers in layer_lists(model).items()}
    for stack, layers in layer_lists(model).items():
        for i, layer in enumerate(layers):
            first = next(layer.children())  # runs only when the layer does
            first.register_forward_hook(lambda *_, s=stack, i=i: runs[s].__setitem__(i, runs[s][i] + 1))
    model.train()
    forwards = 150
    with torch.no_grad():
        for _ in range(forwards):
            model(**inputs(family, length=4))
    total = sum(len(v) for v in runs.values())
    assert 0.62 <= sum(sum(v) for v in runs.values()) / (forwards * total) <= 0.78
    for stack, counts in runs.items():  # the plans are the shared pure function's
        want = [sum(draw_stack_plan(5, u, stack, [0.3] * len(counts))[i].runs for u in range(forwards)) for i in range(len(counts))]
        assert counts == want
    assert handle.update == forwards
    model.eval()
    runs = {stack: [0] * len(v) for stack, v in runs.items()}
    with torch.no_grad():
        model(**inputs(family, length=4))
    assert all(all(c == 1 for c in v) for v in runs.values())


def test_skipped_layers_get_no_gradient_and_ranks_draw_the_same_plans():
    model = tiny("llama")
    handle = apply_layerdrop(model, p=0.5, seed=3)
    other_rank = apply_layerdrop(tiny("llama"), p=0.5, seed=3)
    assert [handle.plan(u) for u in range(20)] == [other_rank.plan(u) for u in range(20)]
    model.train()
    plan = handle.plan(0)["decoder"]
    model(**inputs("llama"), labels=inputs("llama")["input_ids"]).loss.backward()
    assert [layer.mlp.down_proj.weight.grad is not None for layer in model.model.layers] == [p.runs for p in plan]
    assert 0 < sum(p.runs for p in plan) < 4


def test_encoder_and_decoder_rates_apart():
    model = tiny("bart")
    handle = apply_layerdrop(model, encoder_p=0.0, decoder_p=0.5, seed=1)
    plans = [handle.plan(u) for u in range(30)]
    assert all(all(p.runs for p in plan["encoder"]) for plan in plans)
    assert any(not p.runs for plan in plans for p in plan["decoder"])


def test_evenly_spaced_sampling_keeps_the_layers_pruning_keeps():
    from layerdrop.nn.drop_plan import kept_layers
    from layerdrop.pruning import every_other

    handle = apply_layerdrop(tiny("llama", layers=6), p=0.5, seed=2, sampling="evenly-spaced")
    kept = [kept_layers(handle.plan(u)["decoder"]) for u in range(40)]
    assert all(k == (every_other(6, len(k)) if k else []) for k in kept) and len({len(k) for k in kept}) >= 3
    with pytest.raises(UserError, match="evenly-spaced"):
        apply_layerdrop(tiny("llama"), p=0.5, schedule="linear", sampling="evenly-spaced")
    served = apply_layerdrop(tiny("llama", layers=6), p=0.5, seed=2, sampling="evenly-spaced", depths=(3,))
    assert {len(kept_layers(served.plan(u)["decoder"])) for u in range(60)} == {3, 6}  # only the served depths
    up = apply_layerdrop(tiny("llama", layers=6), p=0.5, seed=2, sampling="evenly-spaced", depths=(3,), depths_round="up")
    counts = [len(kept_layers(up.plan(u)["decoder"])) for u in range(200)]
    assert set(counts) == {3, 6} and counts.count(6) > [len(kept_layers(served.plan(u)["decoder"]))
                                                       for u in range(200)].count(6) + 40  # 4..6 kept run all 6
    with pytest.raises(UserError, match="layerdrop depths"):
        apply_layerdrop(tiny("llama"), p=0.5, depths=(2,))


def test_clear_errors():
    with pytest.raises(UserError, match="valid families: gpt2, bert, roberta, llama, mistral, qwen2, opt, bart"):
        prune(transformers.T5ForConditionalGeneration(transformers.T5Config(num_layers=2, d_model=16, d_ff=32, num_heads=2,
                                                                             d_kv=8, vocab_size=VOCAB)), [0])
    with pytest.raises(UserError, match="layers_to_keep \\(decoder\\)"):
        prune(tiny("llama"), [0, 7])
    with pytest.raises(UserError, match="encoder and decoder layers"):
        prune(tiny("bart"), [0, 1])
    with pytest.raises(UserError, match="valid for bart: encoder, decoder"):
        prune(tiny("bart"), {"decoderr": [0]})
    with pytest.raises(UserError, match="in \\[0, 1\\)"):
        apply_layerdrop(tiny("gpt2"), p=1.0)
    model = tiny("gpt2")
    apply_layerdrop(model, p=0.1)
    with pytest.raises(UserError, match="already applied"):
        apply_layerdrop(model, p=0.1)
    with pytest.raises(UserError, match="remove_layerdrop"):
        prune(model, [0])


class RandomTokens(torch.utils.data.Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, index):
        ids = torch.randint(2, VOCAB, (8,), generator=torch.Generator().manual_seed(index))
        return {"input_ids": ids, "labels": ids}


def test_the_trainer_callback_gives_each_optimizer_step_its_plan(tmp_path):
    from layerdrop.integrations.hf import LayerDropCallback

    model = tiny("llama")
    handle = apply_layerdrop(model, p=0.5, seed=7)
    ran: list[tuple[bool, ...]] = []
    model.register_forward_hook(lambda *_: ran.append(tuple(p.runs for p in handle.current["decoder"])))
    args = transformers.TrainingArguments(output_dir=str(tmp_path), max_steps=6, per_device_train_batch_size=2,
                                          gradient_accumulation_steps=2, report_to=[], use_cpu=True, save_strategy="no",
                                          logging_steps=1, learning_rate=1e-3, disable_tqdm=True)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=RandomTokens(),
                                   callbacks=[LayerDropCallback(handle)])
    trainer.train()
    want = [tuple(p.runs for p in handle.plan(step)["decoder"]) for step in range(6) for _ in range(2)]
    assert ran == want and len(set(ran)) > 1
    assert all(record["loss"] == record["loss"] for record in trainer.state.log_history if "loss" in record)


def test_the_trainer_under_torchrun_ddp_drops_the_same_layers_on_every_rank(tmp_path):
    pytest.importorskip("accelerate")
    worker = str(Path(__file__).with_name("hf_trainer_worker.py"))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", worker, str(tmp_path)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world"] == 2 and ranks[0]["distributed"] and ranks[0]["ddp"] == "DistributedDataParallel"
    assert ranks[0]["first_tokens"] != ranks[1]["first_tokens"]  # the ranks trained on different batches
    assert ranks[0]["ran"] == ranks[1]["ran"] and len(ranks[0]["ran"]) == 8
    assert any(not all(step) for step in ranks[0]["ran"])
    for name, value in ranks[0]["checksum"].items():  # the ranks' weights stayed equal
        assert ranks[1]["checksum"][name] == pytest.approx(value, rel=1e-6, abs=1e-9)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A 4-layer random Llama-style model and a BPE tokenizer, written as the README's example writes them."""
    import importlib.util

    from layerdrop.data.corpus import embedded_text

    root = tmp_path_factory.mktemp("hf_model")
    text = embedded_text()
    (root / "train.txt").write_text(text[:40_000])
    (root / "valid.txt").write_text(text[-12_000:])
    spec = importlib.util.spec_from_file_location("example", Path(__file__).parents[1] / "examples" / "hf_llama_layerdrop.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    example.write_tiny(str(root / "train.txt"), str(root / "model"), layers=4, width=32, vocab=300)
    return root


def cli(*args: str) -> subprocess.CompletedProcess:
    """``layerdrop hf ARGS`` in this process (transformers is imported once for the whole file)."""
    import contextlib
    import io

    from layerdrop.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["hf", *args])
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def test_cli_prune_writes_a_model_plain_transformers_loads_with_its_tokenizer(model_dir):
    out = model_dir / "pruned"
    proc = cli("prune", "--model", str(model_dir / "model"), "--layers-to-keep", "0,3", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "original layers kept {'decoder': [0, 3]}" in proc.stdout
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 2 and len(model.model.layers) == 2
    assert transformers.AutoTokenizer.from_pretrained(out)("To be")["input_ids"]
    again = cli("prune", "--model", str(model_dir / "model"), "--layers-to-keep", "0", "--out", str(out))
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr
    bad = cli("prune", "--model", str(model_dir / "model"), "--layers-to-keep", "0,9", "--out", str(model_dir / "bad"))
    assert bad.returncode == 2 and "--layers-to-keep: got '0,9'" in bad.stderr and not (model_dir / "bad").exists()


def test_cli_refuses_an_output_inside_the_model_and_a_model_that_is_not_a_local_directory(model_dir, tmp_path):
    inside = cli("prune", "--model", str(model_dir / "model"), "--layers-to-keep", "0", "--out", str(model_dir / "model" / "sub"))
    assert inside.returncode == 2 and "overlaps --model" in inside.stderr and not (model_dir / "model" / "sub").exists()
    # A missing folder is never taken for a Hub name: no network, one message.
    missing = cli("select", "--model", str(tmp_path / "no-such-model"), "--depth", "1", "--strategy", "every-other",
                  "--data", str(model_dir / "valid.txt"))
    assert missing.returncode == 2 and "no-such-model' is not a directory" in missing.stderr


def test_cli_select_search_finds_the_best_subset_the_scorer_sees(model_dir):
    from layerdrop.integrations.hf.scoring import TextScorer

    proc = cli("select", "--model", str(model_dir / "model"), "--depth", "2", "--strategy", "search", "--data",
               str(model_dir / "valid.txt"), "--max-valid-steps", "2", "--out", str(model_dir / "select.json"))
    assert proc.returncode == 0, proc.stderr
    chosen = json.loads((model_dir / "select.json").read_text())
    scorer = TextScorer(str(model_dir / "model"), str(model_dir / "valid.txt"), max_valid_steps=2)
    scores = {keep: scorer.score(keep) for keep in [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]}
    best = min(scores, key=scores.get)
    assert chosen["keep"] == list(best) and chosen["score"] == pytest.approx(scores[best], rel=1e-5)
    assert chosen["subsets_scored"] == 6


def test_cli_sweep_writes_table_json_and_png(model_dir):
    out = model_dir / "sweep"
    proc = cli("sweep", "--model", str(model_dir / "model"), "--depths", "4,2,1", "--data", str(model_dir / "valid.txt"),
               "--max-valid-steps", "1", "--strategy", "block-influence", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.with_suffix(".json").read_text())
    assert [p["depth"] for p in result["runs"][0]["points"]] == [4, 2, 1] and out.with_suffix(".png").stat().st_size > 0
    assert "4 layers" in proc.stdout


def test_cli_without_transformers_says_how_to_install(model_dir):
    script = ("import sys; sys.modules['transformers'] = None\nfrom layerdrop.cli import main\n"
              f"sys.exit(main(['hf', 'prune', '--model', {str(model_dir / 'model')!r}, '--layers-to-keep', '0', "
              f"'--out', {str(model_dir / 'never')!r}]))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 2 and "pip install 'layerdrop[hf]'" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.filterwarnings("ignore::FutureWarning")  # the method's name changes in transformers 6
@pytest.mark.parametrize("reentrant", [False, True])
def test_layerdrop_with_gradient_checkpointing_gives_the_same_gradients(reentrant):
    batch = inputs("llama")
    grads = []
    for checkpointing in (False, True):
        model = tiny("llama")
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
        apply_layerdrop(model, p=0.5, seed=3)
        model.train()
        model(**batch, labels=batch["input_ids"], use_cache=False).loss.backward()
        grads.append([p.grad for p in model.parameters()])
    assert sum(g is None for g in grads[0]) > 0
    for plain, checkpointed in zip(*grads):
        assert (plain is None) == (checkpointed is None)
        if plain is not None:
            torch.testing.assert_close(plain, checkpointed, rtol=1e-5, atol=1e-6)


def test_remove_layerdrop_puts_back_forwards_and_the_family_rates():
    model = tiny("bart")
    decoder = model.model.decoder
    own = decoder.layers[1].forward
    decoder.layers[1].forward = lambda *args, **kwargs: own(*args, **kwargs)  # as accelerate's device maps do
    theirs = decoder.layers[1].__dict__["forward"]
    apply_layerdrop(model, p=0.5)
    assert model.config.decoder_layerdrop == 0.0 and decoder.layerdrop == 0.0
    remove_layerdrop(model)
    assert model.config.decoder_layerdrop == 0.3 and decoder.layerdrop == 0.3 and model.config.encoder_layerdrop == 0.3
    assert decoder.layers[1].__dict__["forward"] is theirs and "forward" not in decoder.layers[0].__dict__
    assert model._layerdrop is None


def test_every_strategy_runs_on_a_hugging_face_model(model_dir):
    from layerdrop.analysis.strategies import select_layers
    from layerdrop.integrations.hf.scoring import TextScorer

    scorer = TextScorer(str(model_dir / "model"), str(model_dir / "valid.txt"), max_valid_steps=1)
    for strategy in ("every-other", "angular", "block-influence"):
        selection = select_layers(scorer, 2, strategy)
        assert len(selection.keep) == 2 and selection.score == scorer.score(selection.keep)
    assert select_layers(scorer, 2, "angular").keep in ([0, 1], [0, 3], [2, 3])  # a block of 2 consecutive removed
    with pytest.raises(UserError, match="learned gates"):
        select_layers(scorer, 2, "learned")


def test_the_core_package_never_imports_transformers():
    script = ("import sys, layerdrop, layerdrop.cli, layerdrop.train, layerdrop.analysis.strategies, layerdrop.demo\n"
              "from layerdrop.cli import build_parser\nbuild_parser()\nprint('transformers' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"
