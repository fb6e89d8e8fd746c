"""The demo runner (`python -m nscnet.demo`, `make demo`): real steps, tiny sizes, two workers."""

from __future__ import annotations

import re

from mlflow.tracking import MlflowClient

from nscnet import demo
from nscnet.demo import COMPARE, Task

TINY = (
    Task("synth", "synth --out demo/audio --types 3 --songs 18 --recordings 1 --seed 0", cost_s=1),
    Task("preprocess", "preprocess --audio demo/audio --out demo/dataset --duration_s 0.5 --frames 32 --n_mels 32",
         ("synth",), cost_s=2),
    Task("entropy", "entropy --audio demo/audio", ("synth",), cost_s=1),
    Task("basenet", "basenet --data demo/dataset --k 3 --pca_dim 8 --truth true", ("preprocess",), cost_s=1),
    Task("zipf", "zipf --run_id {basenet} --bootstrap 20", ("basenet",), cost_s=1),
    Task(COMPARE, "", ("basenet", "zipf", "entropy"), cost_s=1, experiment=False),
)


def test_demo_runs_every_step_on_two_workers_and_reports_them(tracking, capsys):
    assert demo.run_demo(2, "demo-test", tasks=TINY, warm_modules=("nscnet.runs.tracking",)) == 0
    out = capsys.readouterr().out
    # every step printed as the nscnet command it equals, with its seconds and run id
    assert "== nscnet zipf --run_id " in out and "--bootstrap 20 --experiment demo-test" in out
    table = out.split("== what the demo did", 1)[1]
    runs = dict(re.findall(r"^\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+nscnet (\w+)\s+([0-9a-f]{32})$", table, re.M))
    assert set(runs) == {"synth", "preprocess", "entropy", "basenet", "zipf"}
    client = MlflowClient(tracking_uri=tracking)  # not a URI an earlier test set in this process
    for step, run_id in runs.items():
        run = client.get_run(run_id)
        assert run.data.tags["nscnet.step"] == step and run.info.status == "FINISHED"
    # zipf read the clustering of the basenet run the demo passed it
    assert client.get_run(runs["zipf"]).data.params["run_id"] == runs["basenet"]
    assert "2 at a time" in out.splitlines()[0]
    assert (demo.Path("demo") / "comparison.html").is_file() and (demo.Path("demo") / "logs" / "zipf.log").is_file()
    assert "Demo done." in out and "PNG copies (waited for)" in table


def test_demo_stops_at_a_failed_step_with_its_status(tracking, capsys):
    broken = (Task("synth", "synth --out demo/audio --songs 0"), TINY[2])
    assert demo.run_demo(2, "demo-test", tasks=broken, warm_modules=()) == 2
    captured = capsys.readouterr()
    assert "synth failed (exit status 2)" in captured.err
    assert "nscnet synth: songs=0" in captured.out  # the step's own message, from its log
    assert "== nscnet entropy" not in captured.out and "Demo done." not in captured.out


def test_cpu_budget_follows_omp_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert demo.cpu_budget() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "16")
    assert demo.cpu_budget() == 4  # no more independent branches than that
    order = demo.chain_s()
    assert max(order, key=order.get) == "synth"  # every chain starts there
    assert order["nscnet"] > order["basenet"]  # the long training chains start first
