"""The README's test command is exactly what CI runs."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _code_blocks(text):
    return re.findall(r"```bash\n(.*?)\n```", text, flags=re.S)


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    block = ci.split("# --- README test command ---\n")[1].split("# --- end ---")[0].strip()
    commands = _code_blocks(readme)
    assert block in commands, "the README's test command and .ci/run differ"
    assert "pytest" in block


def test_readme_main_job_runs_compare():
    commands = _code_blocks((ROOT / "README.md").read_text())
    assert any(c.endswith("keras-wtrain compare") and "pip install" in c for c in commands)


def test_readme_quick_start_runs():
    blocks = re.findall(r"```python\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.S)
    assert blocks, "the README has a Python quick start"
    namespace = {}
    exec(compile(blocks[0], "README.md quick start", "exec"), namespace)
    loss, accuracy = namespace["model"].evaluate(namespace["data"].x_test, namespace["data"].y_test, verbose=0)
    assert accuracy > 0.8
    # Optimum shifting in the quick start moved weights and never raised the guarded training loss beyond its guard.
    history = namespace["shifting"].history
    assert history and any(entry["kept"] for entry in history)
    for entry in history:
        if entry["kept"]:
            assert entry["loss_after"] <= entry["loss_before"] * 1.02 + 1e-3
            assert any(info.get("relative_change_live", 0) > 0.01 for info in entry["layers"].values())
