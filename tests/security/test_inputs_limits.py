"""Small inputs that used to cost gigabytes: YAML alias bombs, -smp 300000000, huge CPU ranges.

Each attack runs in a fresh process (tests.security.measure) and must be refused within a
generous time and memory bound. Before the fix a 451-byte alias bomb took 111 s and 3.2 GB
(one more level exceeds the host's RAM); ``-smp 300000000`` built a list of 300 million ints
(MemoryError under a 2 GB limit, ~11 GB without one).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.cmdline import CmdlineError, parse_args
from scenarios import ScenarioError, parse_scenario, safe_yaml
from tests.security.measure import measure, vmemlab

HEADER = "title: x\nmachine: '-m 256M'\nsteps: [{say: hi}]\n"


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The "billion laughs": each level lists the previous one ``width`` times."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        name, prev = chr(ord("a") + i), chr(ord("a") + i - 1)
        lines.append(f"{name}: &{name} [" + ",".join(f"*{prev}" for _ in range(width)) + "]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_at_once() -> None:
    bomb = "steps: [{say: hi}]\ntitle: x\nmachine: '-m 256M'\nsummary:\n" + "".join(
        "  " + line + "\n" for line in alias_bomb(10).splitlines())
    assert len(bomb) < 600
    got = measure(f"from scenarios import parse_scenario, ScenarioError\ntext = {bomb!r}",
                  """
                  try:
                      parse_scenario(text, "bomb.yaml")
                      result = "accepted"
                  except ScenarioError as err:
                      result = str(err)
                  """)
    assert got.result == ("bomb.yaml:5: anchors and aliases (&name, *name) are not allowed in "
                          "a scenario")
    assert got.seconds < 2.0
    assert got.rss_growth_mb < 50


@pytest.mark.parametrize(("text", "line", "message"), [
    (HEADER + "goals: [{goal: g, when: {node: " + "9" * 5000 + "}}]\n", 4,
     "an integer written with 5000 characters (at most 70)"),
    (HEADER + "summary: " + "[" * 5000 + "]" * 5000 + "\n", 4, "nested more than 32 levels"),
    (HEADER + "summary: [" + ", ".join(["1"] * 25_000) + "]\n", 4,
     "more than 20000 values in one file"),
    (HEADER + "---\n" + HEADER, 4, "but found another document"),
    (HEADER + "summary: x\n" + "#" * (1 << 20) + "\n", 0, "the file has"),
    (HEADER.replace("title: x", "title: 2001-02-30"), 0, "not valid YAML"),
    (HEADER + "anchor: &a 1\n", 4, "anchors and aliases"),
])
def test_yaml_bounds_come_with_a_line(text: str, line: int, message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "up.yaml")
    problem = info.value.problems[0]
    assert (problem.line, problem.file) == (line, "up.yaml")
    assert message in problem.message


def test_limits_are_the_documented_ones() -> None:
    assert (safe_yaml.MAX_TEXT_BYTES, safe_yaml.MAX_NODES, safe_yaml.MAX_DEPTH,
            safe_yaml.MAX_INT_CHARS) == (1 << 20, 20_000, 32, 70)


def test_huge_smp_is_refused_before_anything_is_built() -> None:
    for argv, text in [
        (["-smp", "300000000"],
         "Invalid SMP CPUs 300000000. The max CPUs supported by machine 'virt-7.2' is 512"),
        (["-smp", "2,maxcpus=300000000"],
         "Invalid SMP CPUs 300000000. The max CPUs supported by machine 'virt-7.2' is 512"),
        (["-smp", "sockets=100000,cores=100000"],
         "Invalid SMP CPUs 10000000000. The max CPUs supported by machine 'virt-7.2' is 512"),
    ]:
        got = measure(f"from monitor.cmdline import parse_args, CmdlineError\nargv = {argv!r}",
                      """
                      try:
                          parse_args(argv)
                          result = "accepted"
                      except CmdlineError as err:
                          result = str(err)
                      """)
        assert got.result == f"vmemlab: {text}"
        assert got.seconds < 2.0 and got.rss_growth_mb < 50


@pytest.mark.parametrize(("cpus", "message"), [
    ("0-300000000", "Parameter 'cpus' expects a uint64 value or range"),
    ("5-1", "Parameter 'cpus' expects a uint64 value or range"),
    ("1" * 5000, "Parameter 'cpus' expects a uint64 value or range"),
    ("70000", "Parameter 'cpus' expects uint16_t"),
    ("0-65535", "CPU index (2) should be smaller than maxcpus (2)"),
])
def test_numa_cpu_ranges_as_qemus_opts_visitor(cpus: str, message: str) -> None:
    option = f"node,cpus={cpus}"
    got = measure(f"from monitor.cmdline import parse_args, CmdlineError\nopt = {option!r}",
                  """
                  try:
                      parse_args(["-smp", "2", "-numa", opt])
                      result = "accepted"
                  except CmdlineError as err:
                      result = err.message
                  """)
    assert got.result == message
    assert got.seconds < 2.0 and got.rss_growth_mb < 50


def test_5000_digit_numbers_on_the_command_line_are_errors_not_tracebacks() -> None:
    for argv, message in [
        (["-smp", "9" * 5000], "Parameter 'cpus' expects a number"),
        (["-numa", "node,nodeid=" + "9" * 5000], "Parameter 'nodeid' expects uint16"),
        (["-m", "9" * 5000], "Parameter 'size' expects a non-negative number below 2^64"),
        (["-object", "memory-backend-ram,id=m0,size=" + "9" * 5000],
         "Parameter 'size' expects size"),
    ]:
        with pytest.raises(CmdlineError) as info:
            parse_args(argv)
        assert info.value.message == message


def test_vmemlab_run_prints_qemus_line_for_huge_smp() -> None:
    proc = vmemlab(["run", "-smp", "300000000"], timeout=30)
    assert proc.returncode == 1
    assert proc.stderr == ("vmemlab: Invalid SMP CPUs 300000000. The max CPUs supported by "
                           "machine 'virt-7.2' is 512\n")


NUMBERS = st.sampled_from(["0", "1", "2", "-1", "9" * 25, "9" * 5000, "0x10", "1-3", "0-99999",
                           "65535", "4G", "", "on"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(
    st.sampled_from(["-smp", "-m", "-numa", "-object", "-device", "-chardev", "-machine"]),
    st.lists(st.tuples(st.sampled_from(["cpus", "maxcpus", "sockets", "cores", "nodeid", "id",
                                        "size", "memdev", "node", "requested-size",
                                        "block-size", "memaddr", "max-size", "path"]),
                       st.one_of(NUMBERS, st.text(max_size=8))), max_size=4),
    st.sampled_from(["", "node,", "memory-backend-ram,", "virtio-mem-pci,", "socket,"])),
    max_size=5))
def test_fuzz_command_lines_only_raise_cmdline_errors(
        options: list[tuple[str, list[tuple[str, str]], str]]) -> None:
    argv: list[str] = []
    for name, props, prefix in options:
        argv += [name, prefix + ",".join(f"{k}={v}" for k, v in props)]
    try:
        opts = parse_args(argv)
    except CmdlineError:
        return
    assert opts.config.smp <= 512
