"""The shipped `recipes/accelerate/*.yaml` are valid `accelerate launch --config_file` files and set
what the README promises: read with accelerate's own config class, turned into the environment
its launcher gives each process, and (FSDP) into the plugin the Trainer's Accelerator builds."""

from __future__ import annotations

import argparse
import functools
import os
from pathlib import Path
from unittest import mock

import pytest
from accelerate.commands.config.config_args import ClusterConfig
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env
from conftest import tiny_llama
from torch.distributed.fsdp import ShardingStrategy, StateDictType

CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "accelerate"
EXPECTED_TYPE = {
    "ddp": DistributedType.MULTI_GPU,
    "fsdp": DistributedType.FSDP,
    "deepspeed_zero3": DistributedType.DEEPSPEED,
}


def launch_env(name: str) -> tuple[argparse.Namespace, dict[str, str]]:
    """The launcher's parsed arguments and the environment it would give each process."""
    argv = ["--config_file", str(CONFIGS / f"{name}.yaml"), "-m", "llm_unlearn", "recipe.yaml"]
    args, defaults, mixed_precision_from_config = _validate_launch_command(
        launch_command_parser().parse_args(argv)
    )
    if args.use_deepspeed:
        # what `accelerate launch` sets before its DeepSpeed launcher
        fields = [*defaults.deepspeed_config, *(["mixed_precision"] if mixed_precision_from_config else [])]
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        return args, prepare_deepspeed_cmd_env(args)[1]
    args.main_process_port = 0  # a free port: the launcher would otherwise probe 29500
    return args, prepare_multi_gpu_env(args)


def test_every_shipped_config_is_tested() -> None:
    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED_TYPE)


@pytest.mark.parametrize("name", sorted(EXPECTED_TYPE))
def test_config_parses_as_one_node_bf16(name: str) -> None:
    config = ClusterConfig.from_yaml_file(str(CONFIGS / f"{name}.yaml"))
    assert config.distributed_type == EXPECTED_TYPE[name]
    assert (config.num_machines, config.mixed_precision, config.use_cpu) == (1, "bf16", False)
    args, env = launch_env(name)
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    assert (args.multi_gpu, args.use_fsdp, args.use_deepspeed) == (
        name == "ddp",
        name == "fsdp",
        name == "deepspeed_zero3",
    )


def test_fsdp_full_shard_wraps_decoder_layers_and_keeps_original_params(tok) -> None:
    _, env = launch_env("fsdp")
    with mock.patch.dict(os.environ, env):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 1
    assert plugin.sharding_strategy == ShardingStrategy.FULL_SHARD
    assert plugin.state_dict_type == StateDictType.FULL_STATE_DICT
    # SURE's frozen weights share FlatParameters with trainable ones: only use_orig_params allows that
    assert plugin.use_orig_params is True
    plugin.set_auto_wrap_policy(tiny_llama(tok))
    assert isinstance(plugin.auto_wrap_policy, functools.partial)
    assert {cls.__name__ for cls in plugin.auto_wrap_policy.keywords["transformer_layer_cls"]} == {
        "LlamaDecoderLayer"
    }


def test_zero3_saves_full_16bit_weights() -> None:
    _, env = launch_env("deepspeed_zero3")
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true"
    assert env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == "3"
    assert env["ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL"] == "true"
    # SURE scores saliency on the whole model before DeepSpeed partitions it
    assert env["ACCELERATE_DEEPSPEED_ZERO3_INIT"] == "false"
    # left to the recipe's train section, so the two cannot disagree
    assert "ACCELERATE_GRADIENT_ACCUMULATION_STEPS" not in env
