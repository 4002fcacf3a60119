import pytest
from pytest_hokusai.stack.faults import FAULTS

@pytest.mark.parametrize("name", ["auth-bypass", "auth-misrouted", None])
def test_probe(run_live, name, e2e_keys):
    run = run_live("--durations=8", "-p", "no:terminalprogress", faults=[name] if name else None)
    with open("/tmp/e2e_scratch/probe2.txt", "a") as fh:
        fh.write(f"== {name} {run.seconds:.1f}s\n")
        fh.write("\n".join(l for l in run.result.outlines if "s call" in l or "s setup" in l or "s teardown" in l or " in " in l) + "\n")
