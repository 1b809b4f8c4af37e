"""Reading the tables: good files load, bad ones fail with one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from latkit.core.errors import LatkitError, UsageError
from latkit.search.framework.tabular import BenchmarkColumn, TabularProblem, run_tabular, split_spec
from latkit.profiler.spaces import get_space


SPACE = get_space("nasbench201")
DATA = Path(__file__).resolve().parents[2] / "data"
ACC = f"{DATA / 'nasbench201_accuracy.csv'}:cifar10-val"
LAT = f"{DATA / 'nasbench201_latency_ms.csv'}:pixel3"
CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def test_nb201_tables_cover_the_space(nb201):
    assert len(nb201.candidates()) == 15625
    arch = SPACE.arch_from_native(CELL)
    assert nb201.latency.latency_ms(arch) == pytest.approx(17.2381)
    assert nb201.accuracy.accuracy(arch) == pytest.approx(82.83399999389648)
    ms, fastest = nb201.latency.min_latency(SPACE)
    assert ms == min(nb201.latency.column.values.values())


def test_oracle_is_best_feasible(nb201, median_target):
    acc, arch = nb201.oracle(median_target)
    lat = nb201.latency.column.values
    assert lat[arch] <= median_target
    assert all(v <= acc for a, v in nb201.accuracy.column.values.items() if lat[a] <= median_target)


def _write(tmp_path, text):
    p = tmp_path / "t.csv"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("content", "column", "message"),
    [
        (None, "pixel3", "cannot read table"),
        (f"arch_index,arch,pixel3\n0,{CELL},1.0\n", "gpu", "no column 'gpu'; columns: pixel3"),
        ("arch_index,arch,pixel3\n0,|bogus~0|+|a~0|b~1|+|c~0|d~1|e~2|,1.0\n", "pixel3",
         "line 2: unknown NAS-Bench-201 op 'bogus'"),
        (f"arch_index,arch,pixel3\n0,{CELL},nan\n", "pixel3", "line 2: pixel3='nan' is not a finite"),
        (f"arch_index,arch,pixel3\n0,{CELL},1\n1,{CELL},2\n", "pixel3", "line 3: .* repeated"),
    ],
)
def test_bad_tables(tmp_path, content, column, message):
    path = tmp_path / "missing.csv" if content is None else _write(tmp_path, content)
    with pytest.raises(LatkitError, match=message) as err:
        BenchmarkColumn.read(SPACE, f"{path}:{column}")
    assert "\n" not in str(err.value)


def test_spec_needs_column():
    with pytest.raises(UsageError, match="CSV:COLUMN"):
        split_spec("table.csv")


def test_partial_latency_table_is_caught(tmp_path):
    lat = _write(tmp_path, f"arch_index,arch,pixel3\n0,{CELL},1.0\n")
    problem = TabularProblem.load("nasbench201", ACC, f"{lat}:pixel3")
    assert problem.candidates() == [SPACE.arch_from_native(CELL)]
    with pytest.raises(LatkitError, match="has no row"):
        run_tabular("nasbench201", problem, None, 5.0, "random", 5, seed=0)


def test_run_tabular_from_paths_and_bad_samples():
    res = run_tabular("nasbench201", ACC, LAT, 12.0, "random", 5, seed=0)
    assert res.queries_used == 5 and res.accuracy_provenance["column"] == "cifar10-val"
    with pytest.raises(UsageError, match="latency-samples"):
        run_tabular("nasbench201", ACC, LAT, 12.0, "random", 5, seed=0, latency_samples=1)
