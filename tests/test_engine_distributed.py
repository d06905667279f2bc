"""torchrun DDP on CPU (gloo): 2 processes x batch 2 give the weights of 1 process x batch 4.

This holds because the sampler gives rank r positions r, r+2, ... of the epoch permutation (the
union of the ranks' batch i is the one-process batch i), augmentation is seeded per sample, and
the "sum" loss is normalised per image, so DDP's gradient average equals the one-process
gradient over the global batch. Equality is up to float summation order, not bitwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fcnseg.engine.checkpoint import load_checkpoint
from fcnseg.engine.distributed import EpochSampler

HERE = Path(__file__).resolve()


def test_sampler_shards_union_is_the_global_batch():
    single = EpochSampler(10, batch_size=4, seed=1, num_replicas=1, rank_id=0)
    shards = [EpochSampler(10, batch_size=2, seed=1, num_replicas=2, rank_id=r) for r in (0, 1)]
    single_order = single.epoch_order()
    orders = [shard.epoch_order() for shard in shards]
    assert len(single_order) == 8  # drop_last keeps whole global batches
    for batch in range(2):
        merged = orders[0][2 * batch : 2 * batch + 2] + orders[1][2 * batch : 2 * batch + 2]
        assert sorted(merged) == sorted(single_order[4 * batch : 4 * batch + 4])
    # A new epoch reshuffles; skipping resumes mid-epoch at the same sample.
    single.set_epoch(1)
    assert single.epoch_order() != single_order
    single.set_epoch(1, start_batch=1)
    assert list(single) == single.epoch_order()[4:]


def _child(out: str, world: int) -> None:
    from test_engine_train import TinySegNet, tiny_config, tiny_datasets

    from fcnseg.engine.train import train

    torch.set_num_threads(1)
    torch.manual_seed(0)
    train_set, val_set = tiny_datasets(num_train=8, num_val=3)  # uneven val shards
    model = TinySegNet(train_set.num_classes)
    model.encoder[2].p = 0.0  # dropout masks would differ between 1 and 2 processes
    config = tiny_config(
        batch_size=4 // world,
        accumulate=1,
        lr=1e-4,
        loss_normalization="sum",
        epochs=2,
        checkpoint_every=0,
    )
    train(config, out=out, model=model, train_set=train_set, val_set=val_set)


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    single = subprocess.run(
        [sys.executable, str(HERE), str(tmp_path / "one"), "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
    ]
    ddp = subprocess.run(
        [*launcher, str(HERE), str(tmp_path / "two"), "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one = load_checkpoint(tmp_path / "one")
    two = load_checkpoint(tmp_path / "two")
    assert one["step"] == two["step"] == 4
    initial = TinySegNetWeights.initial()
    for key, value in one["model"].items():
        assert torch.allclose(value, two["model"][key], rtol=1e-4, atol=1e-6), key
        assert not torch.equal(value, initial[key]), f"{key} did not train"


class TinySegNetWeights:
    @staticmethod
    def initial() -> dict[str, torch.Tensor]:
        sys.path.insert(0, str(HERE.parent))
        from test_engine_train import TinySegNet

        torch.manual_seed(0)
        return TinySegNet(6).state_dict()


if __name__ == "__main__":
    _child(sys.argv[1], int(sys.argv[2]))
