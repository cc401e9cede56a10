#!/usr/bin/env python3
"""scripts/bench's report: raw.jsonl + meta.json + cairn's --progress=json logs in OUT ->
OUT/results.json, OUT/results.md and OUT/stages.png (when matplotlib is there).

Every cell is the median with min and max over the runs; every comparison is a ratio of two
cells measured in the same run on the same machine, since absolute times drift on a shared
box. Usage: bench.py OUT
"""

import json
import os
import statistics
import sys

PEERS = ["cairn-tar", "cairn-containerd", "buildkit", "buildah", "buildah+load", "docker", "podman"]
STAGES = ["pull", "unpack", "copy", "run", "layer", "load", "other"]
# Which cairn step produced each limits tree (matched on the step's text).
TREE_STEP = {"small": ("synthetic", "/data/small"), "large": ("synthetic", "/data/large"),
             "copy": ("copy", "COPY tree/")}


def cell(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def fmt(c, unit="s", digits=2):
    if c is None:
        return "–"
    m = f"{c['median']:.{digits}f}{unit}"
    if c["n"] > 1:
        m += f" ({c['min']:.{digits}f}–{c['max']:.{digits}f})"
    return m


def ratio(a, b):
    if a is None or b is None or not b["median"]:
        return None
    return a["median"] / b["median"]


def fr(r, digits=2):
    return "–" if r is None else f"{r:.{digits}f}"


def cairn_events(log):
    """Step texts by number, done events, and the arrival times of the first step event, of
    "loading the image into Docker" and of "finished" (scripts/lib/bench.sh stamps each
    stderr line with the wall clock)."""
    steps, dones, marks = {}, [], {}
    try:
        with open(log + ".err", errors="replace") as f:
            for line in f:
                ts, _, rest = line.partition(" ")
                try:
                    ts, ev = float(ts), json.loads(rest)
                except ValueError:
                    continue
                kind = ev.get("event")
                if kind == "step":
                    steps[ev["step"]] = ev["text"]
                    marks.setdefault("first_step", ts)
                elif kind == "done":
                    dones.append(ev)
                elif kind == "info" and ev.get("message", "").startswith("loading the image"):
                    marks["load"] = ts
                elif kind == "finished":
                    marks["finished"] = ts
    except OSError:
        pass
    return steps, dones, marks


def main(out):
    meta = json.load(open(os.path.join(out, "meta.json")))
    rows = [json.loads(l) for l in open(os.path.join(out, "raw.jsonl")) if l.strip()]

    # builds[(workload, tool, scenario)] = [row per run]
    builds, limits, pipes, floors, grinds = {}, {}, {}, {}, {}
    for r in rows:
        if r["kind"] == "floor" and r["ok"]:
            wl, part = r["name"].split("/")
            floors.setdefault(wl, {}).setdefault(part, []).append(r["seconds"])
        elif r["kind"] == "callgrind" and r["ok"]:
            grinds[r["name"]] = r["instructions"]
        elif r["kind"] == "build":
            wl, tool = r["name"].split("/")
            builds.setdefault((wl, tool, r["scenario"]), []).append(r)
        elif r["kind"] == "limit":
            limits.setdefault((r["scenario"], r["name"]), []).append(r)
        elif r["kind"] == "pipeline":
            pipes.setdefault((r["scenario"], r["name"]), []).append(r)

    # A run whose cold build failed has no no-op (its "no-op" was the first real build) and no
    # change measurement worth the name: count those as failed too.
    cold_failed = {(wl, tool, r["run"]) for (wl, tool, sc), rs in builds.items() if sc == "cold"
                   for r in rs if not r["ok"]}
    for (wl, tool, sc), rs in builds.items():
        if sc != "cold":
            for r in rs:
                if (wl, tool, r["run"]) in cold_failed:
                    r["ok"] = False

    def ok_secs(rs):
        return [r["seconds"] for r in rs if r["ok"]]

    # buildah end to end: bud + push into the daemon, per run.
    for (wl, tool, sc), rs in list(builds.items()):
        if tool != "buildah":
            continue
        loads = {r["run"]: r for r in builds.get((wl, "buildah-load", sc), [])}
        e2e = []
        for r in rs:
            l = loads.get(r["run"])
            if l:
                e2e.append(dict(r, seconds=r["seconds"] + l["seconds"], ok=r["ok"] and l["ok"],
                                max_rss_kb=max(r["max_rss_kb"], l["max_rss_kb"])))
        builds[(wl, "buildah+load", sc)] = e2e

    workloads = sorted({k[0] for k in builds}, key=["workspace", "synthetic", "copy", "stages"].index)
    scenarios = ["cold", "noop", "change"]
    tools = ["cairn"] + [p for p in PEERS if any(k[1] == p for k in builds)]
    res = {"meta": meta, "builds": {}, "memory": {}, "stages": {}, "limits": {}, "targets": [],
           "floor": {}, "callgrind": {}}

    # The no-op floor per workload: cairn's process start + one manifest HEAD + one engine
    # inspect, the requests timed through curl less curl's own start.
    for wl, parts in floors.items():
        c = {k: cell(v) for k, v in parts.items()}
        if all(c.get(k) for k in ["cairn-version", "curl-version", "head+inspect"]):
            total = c["cairn-version"]["median"] \
                + max(0.0, c["head+inspect"]["median"] - c["curl-version"]["median"])
            c["total"] = {"median": total, "min": total, "max": total, "n": 1}
        res["floor"][wl] = c

    # Instruction counts of cairn's no-op (a guard that a busy machine cannot blur), against
    # the baseline checked in beside the workloads, per workload and context size.
    base_path = os.path.join(os.path.dirname(__file__), "..", "..", "testdata", "bench",
                             "callgrind.json")
    try:
        baseline = json.load(open(base_path))
    except (OSError, ValueError):
        baseline = {}
    for name, n in grinds.items():
        key = f"{name}@{'quick' if meta['quick'] else 'full'}"
        base = baseline.get(key)
        res["callgrind"][key] = {"instructions": n,
                                 "baseline": base if isinstance(base, int) else None}

    # noop-hf: the no-op again under hyperfine (median of 20), for the table and the targets;
    # it has no memory or stage figures.
    extra = [x for x in ["noop-hf", "noop-oci", "noop-docker"] if any(k[2] == x for k in builds)]
    shown = scenarios[:2] + extra + scenarios[2:]
    for wl in workloads:
        for sc in shown:
            for t in tools:
                rs = builds.get((wl, t, sc), [])
                c = cell(ok_secs(rs))
                res["builds"][f"{wl}/{sc}/{t}"] = c
                failed = sum(1 for r in rs if not r["ok"])
                if failed and c is not None:
                    c["failed"] = failed
                elif failed:
                    res["builds"][f"{wl}/{sc}/{t}"] = {"failed": failed}
        for t in tools:
            rs = [r for sc in scenarios for r in builds.get((wl, t, sc), []) if r["ok"]]
            res["memory"][f"{wl}/{t}"] = cell([r["max_rss_kb"] / 1024 for r in rs])

    # cairn's stages: per (workload, scenario), summed over its steps, medians over runs;
    # pull = start to the first step (resolve, pull), load = docker load (or the check that
    # Docker has the image), other = the rest (keys, config, steps' untimed parts, exit).
    step_layer = {}  # (workload, step-text match) -> [layer seconds per run] (cold)
    for wl in workloads:
        for sc in scenarios:
            per = {s: [] for s in STAGES}
            for r in builds.get((wl, "cairn", sc), []):
                if not r["ok"]:
                    continue
                steps, dones, marks = cairn_events(r["log"])
                acc = {s: 0.0 for s in STAGES}
                in_steps = 0.0
                if "first_step" in marks:
                    acc["pull"] = max(0.0, marks["first_step"] - r["t0"])
                if "load" in marks and "finished" in marks:
                    acc["load"] = max(0.0, marks["finished"] - marks["load"])
                for d in dones:
                    in_steps += d["seconds"]
                    staged = 0.0
                    for name, secs in d.get("stages", []):
                        acc[name if name in acc else "other"] += secs
                        staged += secs
                    acc["other"] += max(0.0, d["seconds"] - staged)
                    if sc == "cold":
                        text = steps.get(d["step"], "")
                        for tree, (twl, match) in TREE_STEP.items():
                            if twl == wl and match in text:
                                lay = sum(s for n, s in d.get("stages", []) if n == "layer")
                                step_layer.setdefault(tree, []).append(lay)
                acc["other"] += max(0.0, r["seconds"] - in_steps - acc["pull"] - acc["load"])
                for s in STAGES:
                    per[s].append(acc[s])
            res["stages"][f"{wl}/{sc}"] = {s: cell(v) for s, v in per.items()}

    # Limits on the same bytes, cairn's layer writer alone, and its in-build layer stage.
    trees = sorted({k[0] for k in limits} | {k[0] for k in pipes})
    for tree in trees:
        d = {}
        for (t, name), rs in list(limits.items()) + list(pipes.items()):
            if t == tree:
                key = name if (t, name) in limits else "cairn:" + name
                d[key] = cell(ok_secs(rs))
                d[key + ":rss_mib"] = cell([r["max_rss_kb"] / 1024 for r in rs if r["ok"]])
                d[key + ":cpu"] = cell([r.get("cpu_seconds") for r in rs if r["ok"]])
        tar_bytes = None
        for r in pipes.get((tree, "tar"), []):
            try:
                tar_bytes = json.loads(open(r["log"] + ".out").read())["out_bytes"]
            except (OSError, ValueError, KeyError):
                pass
        d["tar_bytes"] = tar_bytes
        if tree in step_layer:
            d["cairn:build-layer-stage"] = cell(step_layer[tree])
        res["limits"][tree] = d

    # Targets (reported, never asserted).
    T = res["targets"]

    def target(name, value, goal, met, note=""):
        # Which way the goal points follows from the verdict: met means on the goal's side.
        le = met == (value <= goal)
        T.append({"target": name, "value": value, "goal": goal, "met": met, "note": note,
                  "cmp": "≤" if le else "≥"})

    def b(wl, sc, t):
        c = res["builds"].get(f"{wl}/{sc}/{t}")
        return c if c and "median" in c else None

    for wl, fl in res["floor"].items():
        total = fl.get("total")
        noop = b(wl, "noop-hf", "cairn")
        r = ratio(noop, total)
        if r is not None:
            target(f"{wl} no-op vs the floor", r, 1.5, r <= 1.5,
                   "cairn time / floor (cairn --version + manifest HEAD + engine inspect), "
                   "hyperfine medians")
        r = ratio(b(wl, "noop-hf", "buildkit"), noop)
        if r is not None:
            target(f"{wl} no-op vs BuildKit", r, 15.0, r >= 15.0,
                   "BuildKit time / cairn time, hyperfine medians")
        for kind in ["oci", "docker"]:
            r = ratio(b(wl, f"noop-{kind}", "cairn"), noop)
            if r is not None:
                target(f"{wl} no-op with -o type={kind} vs the --load no-op", r, 1.5, r <= 1.5,
                       "an output that already holds this image is not rewritten; "
                       "hyperfine medians")
    for key, g in res["callgrind"].items():
        if g["baseline"]:
            r = g["instructions"] / g["baseline"]
            target(f"{key} no-op instructions vs baseline", r, 1.05, r <= 1.05,
                   f"callgrind: {g['instructions']:,} now, {g['baseline']:,} in "
                   "testdata/bench/callgrind.json")
    for peer in ["buildah", "docker"]:
        sc = "noop-hf" if b("workspace", "noop-hf", peer) and b("workspace", "noop-hf", "cairn") \
            else "noop"
        r = ratio(b("workspace", sc, peer), b("workspace", sc, "cairn"))
        if r is not None:
            target(f"workspace no-op vs {peer}", r, 5.0, r >= 5.0,
                   "peer time / cairn time" + (", hyperfine medians" if sc == "noop-hf" else ""))
    for peer, goal in [("buildah+load", 1.25), ("buildkit", 1.6)]:
        r = ratio(b("workspace", "cold", peer), b("workspace", "cold", "cairn"))
        if r is not None:
            target(f"workspace (Coder recipe) cold vs {peer}", r, goal, r >= goal,
                   "peer time / cairn time; apt-get through the same warmed apt-cacher-ng")
    r = ratio(b("copy", "cold", "podman"), b("copy", "cold", "cairn"))
    if r is not None:
        target("copy cold vs podman", r, 1.0, r >= 1.0, "peer time / cairn time")
    c = b("copy", "noop-hf", "cairn")
    if c:
        n = res["meta"]["sizes"]["copy_files"]
        target(f"copy no-op ({n} files), seconds", c["median"], 0.05, c["median"] < 0.05,
               "hyperfine median; the goal is for 20,000 files")
    r = ratio(b("stages", "cold", "buildkit"), b("stages", "cold", "cairn"))
    if r is not None:
        target("stages cold vs BuildKit (independent stages in parallel)", r, 1.0, r >= 1.0,
               "BuildKit time / cairn time; each of three stages waits 3 s")
    r = ratio(b("synthetic", "cold", "buildah+load"), b("synthetic", "cold", "cairn"))
    if r is not None:
        target("synthetic cold vs buildah (bud + push to docker-daemon)", r, 1.5, r >= 1.5,
               "peer time / cairn time, both ending with the image in Docker")
    for tree, d in res["limits"].items():
        for limit, mine, goal in [("tar-sha256", "cairn:none", 0.8), ("pigz", "cairn:gzip", 0.9)]:
            r = ratio(d.get(limit), d.get(mine))
            rc = ratio(d.get(limit + ":cpu"), d.get(mine + ":cpu"))
            if r is not None:
                target(f"{tree}: layer commit {mine[6:]} vs {limit} throughput", r, goal,
                       r >= goal, "limit wall time / cairn wall time; by CPU time: "
                       + fr(rc))
    rss = [(d.get("tar_bytes") or 0, (d.get("cairn:store-zstd:rss_mib") or {}).get("median"))
           for d in res["limits"].values()]
    rss = sorted(x for x in rss if x[1] is not None and x[0])
    if len(rss) >= 2:
        growth = rss[-1][1] / rss[0][1]
        size_growth = rss[-1][0] / rss[0][0]
        target("peak memory flat in layer size (layer writer)", growth, 1.25, growth <= 1.25,
               f"RSS {rss[0][1]:.0f}→{rss[-1][1]:.0f} MiB while the tar grew {size_growth:.1f}×")

    json.dump(res, open(os.path.join(out, "results.json"), "w"), indent=1, sort_keys=True)
    md = report(res, workloads, shown, tools)
    open(os.path.join(out, "results.md"), "w").write(md)
    plot(res, workloads, scenarios, tools, out)
    print(md)


def report(res, workloads, scenarios, tools):
    m = res["meta"]
    s = m["sizes"]
    L = ["# cairn benchmark", ""]
    L.append(f"{m['machine']['date']}, {m['machine']['cpus']} CPUs, {m['machine']['mem_gib']} GiB, "
             f"kernel {m['machine']['kernel']}; {m['runs']} run(s) per cell"
             f"{' (--quick)' if m['quick'] else ''}. Cells: median (min–max).")
    L.append("")
    L.append(f"Sizes run: synthetic {s['small_files']} small files / {s['small_mb']} MiB + "
             f"{s['large_files']} large / {s['large_mb']} MiB; COPY context {s['copy_files']} "
             f"files / {s['copy_mb']} MiB.")
    L.append("")
    for t, note in sorted(m["tools"].items()):
        L.append(f"- {t}: {note}")
    if m.get("package_cache"):
        L.append(f"- package cache (every tool's apt-get): {m['package_cache']}")
    L += ["", "## Builds (wall seconds)", "",
          "buildah+load = `buildah bud` + `buildah push docker-daemon:` (image in Docker, as cairn "
          "and docker build end). Ratios are cairn/peer: below 1 means cairn is faster. noop-hf = "
          "the no-op again under hyperfine (median of 20 runs per bench run): one run under "
          "`/usr/bin/time` cannot resolve milliseconds.", ""]
    peers = [t for t in tools if t != "cairn"]
    L.append("| workload | scenario | " + " | ".join(tools) + " | "
             + " | ".join(f"cairn/{p}" for p in peers) + " |")
    L.append("|---" * (2 + len(tools) + len(peers)) + "|")
    for wl in workloads:
        for sc in scenarios:
            cs = [res["builds"].get(f"{wl}/{sc}/{t}") for t in tools]
            d = 4 if sc.startswith("noop") else 2  # no-ops are milliseconds
            cells = [fmt(c, digits=d) if c and "median" in c else ("FAILED" if c else "–")
                     for c in cs]
            cairn = cs[0] if cs[0] and "median" in cs[0] else None
            rs = [fr(ratio(cairn, c if c and "median" in c else None)) for c in cs[1:]]
            L.append(f"| {wl} | {sc} | " + " | ".join(cells) + " | " + " | ".join(rs) + " |")
    if res["floor"]:
        L += ["", "## The no-op floor (seconds, hyperfine medians)", "",
              "What a `--load` no-op cannot avoid: process start (`cairn --version`), one "
              "manifest HEAD on the registry and one image inspect on the Engine API socket. "
              "One curl process makes both requests; floor = version + (both requests − curl "
              "start).", "",
              "| workload | cairn --version | curl --version | curl HEAD + inspect "
              "| floor | cairn no-op | no-op/floor |", "|---|---|---|---|---|---|---|"]
        for wl, fl in res["floor"].items():
            noop = res["builds"].get(f"{wl}/noop-hf/cairn")
            noop = noop if noop and "median" in noop else None
            L.append(f"| {wl} | " + " | ".join(fmt(fl.get(k), digits=4) for k in [
                "cairn-version", "curl-version", "head+inspect", "total"])
                + f" | {fmt(noop, digits=4)} | {fr(ratio(noop, fl.get('total')))} |")
    if res["callgrind"]:
        L += ["", "## cairn's no-op under callgrind (instructions)", "",
              "Counted by valgrind, so a busy machine does not change them; the baseline is "
              "testdata/bench/callgrind.json (update it when a change is meant to cost more).",
              "", "| workload@size | instructions | baseline | ratio |", "|---|---|---|---|"]
        for key, g in sorted(res["callgrind"].items()):
            base = g["baseline"]
            L.append(f"| {key} | {g['instructions']:,} | {f'{base:,}' if base else '–'} | "
                     f"{fr(g['instructions'] / base if base else None)} |")
    L += ["", "## Peak memory (MiB, max RSS over the scenarios)", "",
          "docker build's figure is the CLI only: the work happens in dockerd.", ""]
    L.append("| workload | " + " | ".join(tools) + " |")
    L.append("|---" * (1 + len(tools)) + "|")
    for wl in workloads:
        L.append(f"| {wl} | " + " | ".join(fmt(res["memory"].get(f"{wl}/{t}"), "", 0)
                                           for t in tools) + " |")
    L += ["", "## Where cairn's time goes (seconds, summed over steps)", "",
          "pull = process start to the first step (resolving and pulling the base); copy = "
          "staging COPY sources (the first step's includes unpacking the base); load = `docker "
          "load`, or the check that Docker already has the image; other = the rest (cache keys, "
          "image config, untimed parts of steps, exit).", ""]
    L.append("| workload | scenario | " + " | ".join(STAGES) + " |")
    L.append("|---" * (2 + len(STAGES)) + "|")
    for wl in workloads:
        for sc in [x for x in scenarios if x != "noop-hf"]:
            st = res["stages"].get(f"{wl}/{sc}", {})
            L.append(f"| {wl} | {sc} | " + " | ".join(fmt(st.get(x)) for x in STAGES) + " |")
    if res["limits"]:
        L += ["", "## Machine limits on the same bytes (seconds)", "",
              "`tar-sha256` = `tar -c | sha256sum`; `pigz` = `tar -c | pigz -6` (all cores); "
              "`gzip-1t` = the same on one core; `zstd-T0` = `tar -c | zstd -3 -T0`; `cp` = "
              "`cp -a`. cairn:MODE = cairn's layer writer alone on the tree (benches/pipeline.rs): "
              "walk + tar + sha256 (+ compression + blob digest); store-* adds the blob write "
              "into a store; build-layer-stage = the step's `layer` stage in the cold build "
              "(cairn's default compression). Fractions are limit/cairn time: cairn's share of "
              "the limit's throughput.", ""]
        cols = ["tar-sha256", "pigz", "gzip-1t", "zstd-T0", "cp", "cairn:tar", "cairn:none",
                "cairn:gzip", "cairn:zstd", "cairn:store-none", "cairn:store-zstd",
                "cairn:build-layer-stage"]
        L.append("| tree | tar MiB | " + " | ".join(cols) + " |")
        L.append("|---" * (2 + len(cols)) + "|")
        for tree, d in res["limits"].items():
            if tree == "base":
                continue
            mib = f"{d['tar_bytes'] / 2**20:.0f}" if d.get("tar_bytes") else "–"
            L.append(f"| {tree} | {mib} | " + " | ".join(fmt(d.get(c)) for c in cols) + " |")
        L += ["", "| tree | none/tar-sha256 | gzip/pigz | gzip/gzip-1t | zstd/zstd-T0 | "
              "store-zstd/zstd-T0 | build-layer/zstd-T0 | layer writer peak RSS MiB (store-zstd) |",
              "|---|---|---|---|---|---|---|---|"]
        for tree, d in res["limits"].items():
            if tree == "base":
                continue
            L.append(f"| {tree} | " + " | ".join(fr(ratio(d.get(a), d.get(b))) for a, b in [
                ("tar-sha256", "cairn:none"), ("pigz", "cairn:gzip"), ("gzip-1t", "cairn:gzip"),
                ("zstd-T0", "cairn:zstd"), ("zstd-T0", "cairn:store-zstd"),
                ("zstd-T0", "cairn:build-layer-stage")]) + " | "
                + fmt(d.get("cairn:store-zstd:rss_mib"), "", 0) + " |")
        L += ["", "CPU seconds (user + system, the command and its children) on the same trees: "
              "on a shared machine wall time includes waiting for a core, CPU time does not.", ""]
        cpu_cols = ["tar-sha256", "pigz", "gzip-1t", "zstd-T0", "cairn:none", "cairn:gzip",
                    "cairn:zstd", "cairn:store-zstd"]
        L.append("| tree | " + " | ".join(cpu_cols) + " | none/tar-sha256 | gzip/pigz | zstd/zstd-T0 |")
        L.append("|---" * (4 + len(cpu_cols)) + "|")
        for tree, d in res["limits"].items():
            if tree == "base":
                continue
            L.append(f"| {tree} | " + " | ".join(fmt(d.get(c + ":cpu")) for c in cpu_cols) + " | "
                     + " | ".join(fr(ratio(d.get(a + ":cpu"), d.get(b + ":cpu"))) for a, b in [
                         ("tar-sha256", "cairn:none"), ("pigz", "cairn:gzip"),
                         ("zstd-T0", "cairn:zstd")]) + " |")
        base = res["limits"].get("base", {})
        if base:
            L += ["", f"Base layer: `tar -x` {fmt(base.get('tar-x'))}, `tar -xzf` "
                  f"{fmt(base.get('tar-xz'))}; compare cairn's `unpack` stage on the first RUN "
                  "of a cold build above."]
    L += ["", "## Targets (reported, not asserted)", "", "| target | value | goal | met | note |",
          "|---|---|---|---|---|"]
    for t in res["targets"]:
        cmp = t.get("cmp", "≥")
        L.append(f"| {t['target']} | {t['value']:.2f} | {cmp} {t['goal']} | "
                 f"{'yes' if t['met'] else 'NO'} | {t['note']} |")
    return "\n".join(L) + "\n"


def plot(res, workloads, scenarios, tools, out):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: matplotlib not installed (apt-get install python3-matplotlib): no plot",
              file=sys.stderr)
        return
    if not workloads:
        return
    colors = {"pull": "#8172b3", "unpack": "#4c72b0", "copy": "#55a868", "run": "#dd8452",
              "layer": "#c44e52", "load": "#937860", "other": "#8c8c8c"}
    markers = {"cairn-tar": "v", "cairn-containerd": "X", "buildkit": "P", "buildah": "o", "buildah+load": "s", "docker": "D", "podman": "^"}
    # One panel per scenario, each on its own linear scale: a stacked bar is only honest on
    # a linear axis, and cold builds and no-ops differ by orders of magnitude.
    fig, axes = plt.subplots(len(scenarios), 1, figsize=(10, 2.2 * len(scenarios) + 1.2))
    for ax, sc in zip(axes, scenarios):
        y = list(range(len(workloads)))
        left = [0.0] * len(workloads)
        for s in STAGES:
            xs = []
            for wl in workloads:
                c = res["stages"].get(f"{wl}/{sc}", {}).get(s)
                xs.append(c["median"] if c else 0.0)
            ax.barh(y, xs, left=left, label=f"cairn: {s}", color=colors[s])
            left = [a + b for a, b in zip(left, xs)]
        for t in tools:
            if t == "cairn":
                continue
            pts = []
            for yy, wl in zip(y, workloads):
                c = res["builds"].get(f"{wl}/{sc}/{t}")
                if c and "median" in c:
                    pts.append((c["median"], yy))
            if pts:
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=markers.get(t, "x"),
                           edgecolors="black", facecolors="none", label=f"{t} (total)", zorder=3)
        ax.set_yticks(y)
        ax.set_yticklabels(workloads)
        ax.invert_yaxis()
        ax.set_xlim(left=0)
        ax.set_title(f"{sc}: cairn's stages (bars) and peers' totals (markers), median seconds",
                     fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:
        for h, l in zip(*ax.get_legend_handles_labels()):
            if l not in labels:
                handles.append(h)
                labels.append(l)
    fig.legend(handles, labels, loc="lower center", ncol=6, fontsize=7)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(os.path.join(out, "stages.png"), dpi=110)


if __name__ == "__main__":
    main(sys.argv[1])
