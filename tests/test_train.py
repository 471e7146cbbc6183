"""Training loop: resume exactness, guard rails, checkpoints (tiny settings, seconds each)."""
import numpy as np
import pytest

from minclip import backend
from minclip.checkpoint import read_checkpoint, save_checkpoint
from minclip.readers import CheckpointError
from minclip.train import TrainConfig, TrainingDiverged, train


def tiny(tmp_path, name, **kw):
    cfg = dict(train_size=48, eval_size=16, epochs=2, batch_size=16, warmup=2, logs=str(tmp_path), name=name,
               progress=False, workers=1, log_every=1)
    cfg.update(kw)
    return TrainConfig(**cfg)


def test_interrupted_then_resumed_run_ends_with_identical_weights(tmp_path):
    full = train(tiny(tmp_path, "full"))
    ref, _ = read_checkpoint(full["checkpoint"])

    def interrupt(step, loss, model):
        if step == 4:  # mid-epoch 2 (3 steps per epoch): the resume must skip exactly the batches seen
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt, match="--resume"):
        train(tiny(tmp_path, "cut"), on_step=interrupt)
    ckpt = str(tmp_path / "cut" / "checkpoints" / "latest.npz")
    assert read_checkpoint(ckpt)[1]["step"] == 4
    resumed = train(tiny(tmp_path, "cut", resume=ckpt))
    assert resumed["step"] == full["step"] == 6
    got, _ = read_checkpoint(resumed["checkpoint"])
    assert set(got) == set(ref)
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)


def test_batch_size_one_is_refused_with_an_explanation(tmp_path):
    with pytest.raises(ValueError, match="identically zero"):
        train(tiny(tmp_path, "b1", batch_size=1))


def test_overfit_batch_drives_the_loss_towards_zero(tmp_path):
    res = train(tiny(tmp_path, "overfit", overfit_batch=8, epochs=60, lr=2e-3, warmup=5, wd=0.0))
    first = float(open(tmp_path / "overfit" / "metrics.jsonl").readline().split('"loss": ')[1].split(",")[0])
    assert first > 1.5  # ~log(8) at the start
    assert res["final_loss"] < 0.1


def test_nan_loss_stops_with_step_number_and_keeps_last_good_checkpoint(tmp_path):
    def poison(step, loss, model):
        if step == 4:
            model.logit_scale.data[...] = np.nan
    with pytest.raises(TrainingDiverged, match="at step 5"):
        train(tiny(tmp_path, "nan"), on_step=poison)
    state = read_checkpoint(str(tmp_path / "nan" / "checkpoints" / "latest.npz"))[1]
    assert state["step"] == 3  # saved at the end of epoch 1, never overwritten by the diverged run


def test_corrupt_and_mismatched_checkpoints_give_clear_errors(tmp_path):
    res = train(tiny(tmp_path, "ok", epochs=1))
    data = open(res["checkpoint"], "rb").read()
    bad = tmp_path / "truncated.npz"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        read_checkpoint(str(bad))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        train(tiny(tmp_path, "r", resume=str(bad)))
    with pytest.raises(FileNotFoundError, match="not found"):
        read_checkpoint(str(tmp_path / "missing.npz"))
    with pytest.raises(ValueError, match="trained with model 'tiny-vit', not 'tiny-rn'"):
        train(tiny(tmp_path, "rn", model="tiny-rn", resume=res["checkpoint"]))
    # weights of the wrong shape for --pretrained never load partially
    model_state, state = read_checkpoint(res["checkpoint"])
    model_state["text_projection"] = model_state["text_projection"][:, :3]
    save_checkpoint(str(tmp_path / "wrong.npz"), model_state, **state)
    with pytest.raises(ValueError, match="text_projection"):
        train(tiny(tmp_path, "p", pretrained=str(tmp_path / "wrong.npz")))


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = str(tmp_path / "c.npz")
    save_checkpoint(path, {"w": np.ones(3, np.float32)}, step=1)

    def boom(*a, **k):
        raise KeyboardInterrupt  # Ctrl-C in the middle of writing
    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"w": np.zeros(3, np.float32)}, step=2)
    model_state, state = read_checkpoint(path)  # the old checkpoint survives intact, no temp files left
    assert state["step"] == 1 and model_state["w"].tolist() == [1, 1, 1]
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]


def test_training_run_writes_metrics_plots_and_learns_something(tmp_path):
    backend.manual_seed(0)
    res = train(tiny(tmp_path, "run", epochs=2))
    run = tmp_path / "run"
    for f in ("config.json", "metrics.jsonl", "curves.png", "similarity.png", "confusion.png"):
        assert (run / f).stat().st_size > 0, f
    assert 0 <= res["zeroshot/shape_top1"] <= 1 and res["zeroshot/pair_heldout_chance"] == 1 / 64


def test_csv_training_logs_retrieval_and_pretrained_accepts_a_plain_state_dict(tmp_path):
    from minclip.data import Shapes
    shapes = Shapes("train", length=24, image_size=32)
    rows = ["filepath\ttitle"]
    for i in range(24):
        shapes.render(i).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png\t{shapes.caption(i)}")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    csv = str(tmp_path / "pairs.csv")
    res = train(tiny(tmp_path, "csv", dataset="csv", train_data=csv, val_data=csv, epochs=1, batch_size=8))
    assert 0 <= res["retrieval/image_to_text_R@1"] <= 1 and "retrieval/mean_recall" in res
    # OpenAI-style weights: a plain .npz of a state_dict, as the README's conversion snippet writes it
    model_state, _ = read_checkpoint(res["checkpoint"])
    np.savez(tmp_path / "plain.npz", **model_state)
    res2 = train(tiny(tmp_path, "ft", epochs=1, pretrained=str(tmp_path / "plain.npz")))
    assert res2["step"] == 3


def test_resuming_a_finished_run_changes_nothing(tmp_path):
    done = train(tiny(tmp_path, "done", epochs=1))
    again = train(tiny(tmp_path, "done", epochs=1, resume=done["checkpoint"]))
    assert again["step"] == done["step"] and again["final_loss"] is None


def test_without_backend_the_run_stays_on_the_chosen_one(tmp_path):
    """No --backend means MINCLIP_BACKEND's (here set by minclip.use, as the variable does at import):
    train() once forced NumPy, which also left every later test of a strict run on NumPy."""
    backend.use("strict")
    seen = []
    train(tiny(tmp_path, "strict", epochs=1),
          on_step=lambda step, loss, model: seen.append((backend.current(), type(model.logit_scale.data).__module__)))
    assert seen and all(s == ("strict", "minclip.strict") for s in seen)
    assert backend.current() == "strict"
