"""README.md's generated lists (config groups, named sweeps, workloads, presets, benchmarks, the
Optuna pin) match what tools/readme_lists.py renders from the tree."""
from __future__ import annotations

from conftest import ROOT, load_script


def _tool():
    return load_script("tools/readme_lists.py", "readme_lists")


def test_generated_blocks_match_the_tree():
    tool = _tool()
    stale = tool.stale((ROOT / "README.md").read_text())
    assert not stale, (f"README.md's generated blocks are out of date: {', '.join(stale)}. "
                       f"Regenerate them with `{tool.COMMAND}` and commit README.md.")


def test_every_list_the_tool_renders_is_in_the_readme():
    tool = _tool()
    shown = {m.group("name") for m in tool.BLOCK.finditer((ROOT / "README.md").read_text())}
    assert shown == set(tool.RENDERERS), f"blocks missing from README.md: " \
        f"{sorted(set(tool.RENDERERS) - shown)}; unknown: {sorted(shown - set(tool.RENDERERS))}"


def test_the_tables_name_every_group_sweep_and_workload():
    tool = _tool()
    groups = tool.config_groups_table()
    for folder in ("cluster", "dataset", "fabric", "gpu", "model", "moe_layout", "parallel",
                   "storage", "sweeper", "tracking", "hydra/help", "hydra/job_logging"):
        assert f"`{folder}/`" in groups
    sweeps = tool.sweeps_table()
    for path in (ROOT / "sweeps").glob("*.yaml"):
        assert f"[`{path.stem}`]" in sweeps
    workloads = tool.workloads_table()
    for name in ("dlrm_dcnv2", "llama31_8b", "llama31_405b", "llama2_70b_lora", "flux1",
                 "gpt_oss_20b", "deepseek_v3_671b"):
        assert f"`{name}`" in workloads


def test_first_sentence():
    tool = _tool()
    assert tool.first_sentence("One process (e.g. a laptop). More.") == "One process (e.g. a laptop)."
    assert tool.first_sentence("FLUX.1 raw (v5.0. here) pipeline. Rest") == \
        "FLUX.1 raw (v5.0. here) pipeline."
    assert tool.first_sentence("Why? Because.") == "Why?"
    long = "A " + "x" * 60 + ": then " + "y" * 200 + "."
    assert tool.first_sentence(long) == "A " + "x" * 60 + "."
    assert tool.first_sentence(long, cut=False) == long


def test_a_stale_block_is_named_and_rewritten():
    tool = _tool()
    text = "a\n<!-- generated:parallel-presets -->`single`<!-- /generated -->\nb\n"
    assert tool.stale(text) == ["parallel-presets"]
    fresh = tool.render(text)
    assert tool.stale(fresh) == [] and "`tp2pp2`" in fresh and fresh.endswith("\nb\n")
