import re

from load_tests import flamegraph


def stacks_from(tmp_path, text):
    raw = tmp_path / "profile.txt"
    raw.write_text(text)
    return flamegraph.read(raw)


def test_self_and_total_shares_of_a_profile(tmp_path):
    stacks = stacks_from(tmp_path, "main;serve;parse 30\nmain;serve 10\n"
                                   "main;walk;walk;leaf 60\nnot a stack line\n")
    top = flamegraph.top_functions(stacks)
    assert dict(top["self"]) == {"leaf": 0.6, "parse": 0.3, "serve": 0.1}
    # a function on the stack twice (recursion) counts once per sample
    assert dict(top["total"]) == {"main": 1.0, "walk": 0.6, "leaf": 0.6, "serve": 0.4,
                                  "parse": 0.3}


def test_flame_graph_widths_follow_samples(tmp_path):
    stacks = stacks_from(tmp_path, "main;serve;parse 30\nmain;serve 10\nmain;walk 60\n")
    svg = flamegraph.render(stacks, "router")
    widths = {name: float(width) for width, name in re.findall(
        r'width="([\d.]+)" height="\d+" fill="[^"]+"/><text [^>]+>([a-z]+)', svg)}
    assert widths["main"] == flamegraph.WIDTH
    assert widths["walk"] == 0.6 * flamegraph.WIDTH
    assert widths["serve"] == 0.4 * flamegraph.WIDTH
    assert "router (100 samples)" in svg
    assert "<title>parse: 30 samples, 30.0%</title>" in svg


def test_idle_waits_are_left_out_and_counted(tmp_path):
    stacks = stacks_from(tmp_path, "main;loop;EpollSelector.select (selectors.py:451) 70\n"
                                   "main;loop;handle (app.py:3) 20\n"
                                   "Thread.run;_worker (concurrent/futures/thread.py:69) 10\n")
    busy, idle = flamegraph.without_idle(stacks)
    assert [frames[-1] for frames, _ in busy] == ["handle (app.py:3)"]
    assert idle == 0.8
