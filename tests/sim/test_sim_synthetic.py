import pytest

from inferplane.sim.cost_model import get_preset
from inferplane.sim.replica import Replica, ReplicaSpec
from inferplane.sim.synthetic import main, run_synthetic
from inferplane.sim.tokenizer import get_tokenizer


def test_virtual_time_run_serves_every_request_and_reuses_shared_prefixes() -> None:
    preset = get_preset("llama3-8b-h100")
    replica = Replica(ReplicaSpec.from_preset(preset), get_tokenizer())
    result = run_synthetic(replica, 300, rate=5.0, num_groups=5, prefix_tokens=400, suffix_tokens=50, max_tokens=20)
    assert result.requests == 300 and result.output_tokens == 300 * 20
    # 5 shared 400-token prefixes among 450-token prompts: most prompt tokens hit after warm-up.
    assert result.prefix_hit_rate > 0.8
    assert 0.010 <= result.mean_itl <= 0.020
    assert result.steps > 0 and not replica.has_work
    assert replica.kv_cache.usage == 0.0


def test_command_line_prints_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--requests", "50", "--rate", "10", "--max-tokens", "5"]) == 0
    assert "50 requests" in capsys.readouterr().out
