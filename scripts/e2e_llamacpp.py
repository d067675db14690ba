"""End-to-end suite against two real llama.cpp servers behind `switchyard serve`.

Started by `scripts/e2e-llamacpp`, which builds `llama-server`, fetches the model and the
`openai` SDK first. Everything listens on 127.0.0.1; every process is started here and stopped
by its pid; every wait is bounded.

1. SDK checks through the gateway (prefix_aware): a plain chat completion with usage, a stream
   with `include_usage`, concurrent async requests reaching both servers, errors (unknown
   model, bad request) as the SDK's exception types, and the engine detection in
   `/admin/backends` (llama.cpp, with its slots).
2. Unloaded TTFT: sequential streamed requests on idle servers, each about a document no
   server has seen (cold) and then again about the same document (warm).
3. Shared-prefix replay per policy, each on freshly started servers: open-loop Poisson
   arrivals of short questions about one of `--docs` documents (~250 words each). The rate is
   chosen from step 2 (see `choose_rate`), and lowered if round robin's p50 TTFT reaches twice
   the unloaded cold TTFT. Cached share is read from each server's `/metrics` before and after.
"""

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import openai

MODEL = "smollm2"
WORDS = (
    "rail yard switch track signal freight car engine brake coupling siding junction "
    "timetable crew depot platform cargo route block dispatcher gauge ballast sleeper "
    "bridge tunnel grade curve station whistle lantern ledger manifest tariff warehouse "
    "harbor crane barge canal lock river valley ridge summit pass forest quarry mill "
    "furnace foundry boiler piston valve crank axle wheel flange rail joint bolt spike"
).split()


def document(i: int, words: int) -> str:
    """A deterministic document of `words` words, unlike the others from its first word."""
    rng = random.Random(1000 + i)
    body = " ".join(rng.choice(WORDS) for _ in range(words))
    return f"Document {i}: field notes number {i * 7919 % 1000}. {body}."


def get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def metrics(url: str) -> dict:
    """The `llamacpp:` samples of a server's /metrics."""
    out = {}
    for line in get(f"{url}/metrics").decode().splitlines():
        if line.startswith("llamacpp:"):
            name, value = line.split()[:2]
            out[name] = float(value)
    return out


def wait_http(url: str, deadline_s: float, proc=None) -> None:
    end = time.time() + deadline_s
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            get(url, timeout=2)
            return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError(f"{url} not up within {deadline_s} s")


class Procs:
    """Processes started here, stopped by pid."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.live = []

    def start(self, name: str, argv: list) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "w")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        self.live.append(p)
        return p

    def stop(self, p: subprocess.Popen) -> None:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if p in self.live:
            self.live.remove(p)

    def stop_all(self) -> None:
        for p in list(self.live):
            self.stop(p)


class Fleet:
    """Two llama-servers and a gateway in front of them."""

    def __init__(self, args, procs: Procs):
        self.args, self.procs = args, procs
        self.servers, self.gateway = [], None
        self.urls = [f"http://127.0.0.1:{args.port + i}" for i in range(2)]
        self.gw_url = f"http://127.0.0.1:{args.port + 10}"
        # prefix_aware's `slot_wait` in seconds (0: llama.cpp picks its slots alone).
        self.slot_wait = 0.0

    def start(self, policy: str) -> None:
        a = self.args
        for i, url in enumerate(self.urls):
            argv = ["nice", "-n", str(a.nice), a.llama_server, "-m", a.model_file,
                    "-c", str(a.ctx * a.slots), "-np", str(a.slots), "-t", str(a.threads),
                    "--alias", MODEL, "--metrics", "--host", "127.0.0.1",
                    "--port", str(a.port + i)]
            if a.cache_ram is not None:
                argv += ["--cache-ram", str(a.cache_ram)]
            self.servers.append(self.procs.start(f"llama-{policy}-{i}", argv))
        for url, p in zip(self.urls, self.servers):
            wait_http(f"{url}/health", 180, p)
        cfg = self.procs.tmp / f"switchyard-{policy}.yaml"
        backends = "".join(f"      - {{url: {u}, name: llama{i}}}\n" for i, u in enumerate(self.urls))
        spec = policy
        if policy == "prefix_aware" and self.slot_wait > 0:
            spec = f"{{name: prefix_aware, slot_wait: {self.slot_wait:.3f}s}}"
        cfg.write_text(
            f"listen: 127.0.0.1:{a.port + 10}\nadmin: {{token: e2e-admin}}\n"
            f"models:\n  {MODEL}:\n    policy: {spec}\n    backends:\n{backends}"
        )
        self.gateway = self.procs.start(f"switchyard-{policy}",
                                        [a.switchyard, "serve", "--config", str(cfg)])
        wait_http(f"{self.gw_url}/ready", 30, self.gateway)

    def stop(self) -> None:
        for p in [self.gateway, *self.servers]:
            if p is not None:
                self.procs.stop(p)
        self.servers, self.gateway = [], None

    def metrics(self) -> list:
        return [metrics(u) for u in self.urls]


def client(fleet: Fleet) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{fleet.gw_url}/v1", api_key="unused", timeout=300)


def messages(doc: str, question: str) -> list:
    return [{"role": "system", "content": f"Answer from this document.\n\n{doc}"},
            {"role": "user", "content": question}]


def sdk_checks(fleet: Fleet, docs: list) -> dict:
    """The `openai` SDK's view of the gateway; raises AssertionError on a failed check."""
    c = client(fleet)
    checks = {}
    r = c.chat.completions.create(model=MODEL, messages=messages(docs[0], "What is it about?"),
                                  max_tokens=8, temperature=0)
    assert r.choices[0].message.content, r
    assert r.usage.prompt_tokens > 100 and 0 < r.usage.completion_tokens <= 8, r.usage
    checks["chat_usage"] = {"prompt_tokens": r.usage.prompt_tokens,
                            "completion_tokens": r.usage.completion_tokens}

    stream = c.chat.completions.create(model=MODEL, messages=messages(docs[1], "Summarize."),
                                       max_tokens=8, temperature=0, stream=True,
                                       stream_options={"include_usage": True})
    text, usage = "", None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert text and usage is not None and usage.completion_tokens > 0, (text, usage)
    checks["stream_usage"] = {"chars": len(text), "completion_tokens": usage.completion_tokens}

    async def concurrent() -> list:
        ac = openai.AsyncOpenAI(base_url=f"{fleet.gw_url}/v1", api_key="unused", timeout=300)
        async def one(i):
            raw = await ac.chat.completions.with_raw_response.create(
                model=MODEL, messages=messages(docs[i % len(docs)], f"Question {i}?"),
                max_tokens=4, temperature=0)
            return raw.headers.get("x-switchyard-backend"), raw.parse()
        out = await asyncio.gather(*(one(i) for i in range(8)))
        await ac.close()
        return out

    results = asyncio.run(concurrent())
    backends = sorted({b for b, _ in results})
    assert all(r.choices[0].message.content is not None for _, r in results)
    assert backends == ["llama0", "llama1"], backends
    checks["async_concurrency"] = {"requests": len(results), "backends": backends}

    try:
        c.chat.completions.create(model="no-such-model", messages=messages("x", "y"), max_tokens=1)
        raise AssertionError("an unknown model was accepted")
    except openai.NotFoundError as e:
        checks["unknown_model"] = {"status": e.status_code, "code": e.code}
    try:
        c.chat.completions.create(model=MODEL, messages="not a list", max_tokens=1)
        raise AssertionError("a bad request was accepted")
    except openai.BadRequestError as e:
        checks["bad_request"] = {"status": e.status_code}

    req = urllib.request.Request(f"{fleet.gw_url}/admin/backends",
                                 headers={"authorization": "Bearer e2e-admin"})
    listing = json.loads(urllib.request.urlopen(req, timeout=5).read())
    engines = [b["engine"] for m in listing["models"] for b in m["backends"]]
    assert all(e and e["kind"] == "llamacpp" and e["slots"] == fleet.args.slots for e in engines), engines
    checks["engine_detection"] = engines
    return checks


async def timed_stream(ac: openai.AsyncOpenAI, doc: str, question: str, max_tokens: int) -> dict:
    """One streamed request: TTFT (first content token) and end, seconds from the send."""
    start = time.perf_counter()
    first = None
    stream = await ac.chat.completions.create(model=MODEL, messages=messages(doc, question),
                                              max_tokens=max_tokens, temperature=0, stream=True)
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - start
    end = time.perf_counter() - start
    return {"ttft_s": first if first is not None else end, "e2e_s": end}


def unloaded(fleet: Fleet, args) -> dict:
    """Sequential requests on an idle server (straight to the first one, so the warm request
    meets its document's slot): cold (a new document) and warm (the same again)."""
    async def run():
        ac = openai.AsyncOpenAI(base_url=f"{fleet.urls[0]}/v1", api_key="unused", timeout=300)
        cold, warm = [], []
        for i in range(args.unloaded_samples):
            doc = document(100 + i, args.doc_words)
            cold.append(await timed_stream(ac, doc, "What is this about?", args.max_tokens))
            warm.append(await timed_stream(ac, doc, "Name one thing in it.", args.max_tokens))
        await ac.close()
        return cold, warm
    cold, warm = asyncio.run(run())
    med = lambda xs, k: statistics.median(x[k] for x in xs)
    return {"cold_ttft_s": med(cold, "ttft_s"), "cold_e2e_s": med(cold, "e2e_s"),
            "warm_ttft_s": med(warm, "ttft_s"), "warm_e2e_s": med(warm, "e2e_s"),
            "samples": args.unloaded_samples}


def choose_rate(u: dict, servers: int, utilization: float) -> float:
    """Requests per second that keep the fleet `utilization` busy if every request cost what a
    cold one costs alone: servers / cold end-to-end time x utilization. Round robin misses the
    cache on about half of its requests, so it runs below that; prefix_aware further below."""
    return utilization * servers / u["cold_e2e_s"]


def replay(fleet: Fleet, args, docs: list, rate: float) -> dict:
    """Open-loop Poisson arrivals at `rate`; the same arrivals and questions for every policy."""
    rng = random.Random(args.seed)
    t, plan = 0.0, []
    for i in range(args.requests):
        t += rng.expovariate(rate)
        plan.append((t, rng.randrange(len(docs)), f"Question {i}: what does it say about {rng.choice(WORDS)}?"))
    before = fleet.metrics()

    async def run():
        ac = openai.AsyncOpenAI(base_url=f"{fleet.gw_url}/v1", api_key="unused", timeout=600)
        start = time.perf_counter()

        async def one(at, d, q):
            await asyncio.sleep(max(0.0, at - (time.perf_counter() - start)))
            try:
                return await timed_stream(ac, docs[d], q, args.max_tokens)
            except Exception as e:  # counted, not fatal: the report shows errors
                return {"error": repr(e)}
        out = await asyncio.gather(*(one(*p) for p in plan))
        await ac.close()
        return out, time.perf_counter() - start

    results, wall = asyncio.run(run())
    after = fleet.metrics()
    ok = [r for r in results if "error" not in r]
    ttft = sorted(r["ttft_s"] for r in ok)
    q = lambda p: ttft[min(len(ttft) - 1, int(p * len(ttft)))] if ttft else None
    delta = lambda k: sum(a.get(k, 0) - b.get(k, 0) for a, b in zip(after, before))
    processed, cached = delta("llamacpp:prompt_tokens_total"), delta("llamacpp:prompt_tokens_cached_total")
    return {
        "requests": len(results), "errors": len(results) - len(ok), "wall_s": wall,
        "error_kinds": sorted({r["error"][:200] for r in results if "error" in r})[:5],
        "ttft_p50_s": q(0.5), "ttft_p90_s": q(0.9), "ttft_p99_s": q(0.99),
        "e2e_p50_s": statistics.median(r["e2e_s"] for r in ok) if ok else None,
        "prompt_tokens_processed": processed, "prompt_tokens_cached": cached,
        "cached_share": cached / (cached + processed) if cached + processed else None,
        "cached_over_prompt_tokens_total": cached / processed if processed else None,
        "per_server": [{k: a.get(k, 0) - b.get(k, 0) for k in a if k.endswith("_total")}
                       for a, b in zip(after, before)],
    }


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--llama-server", required=True)
    p.add_argument("--model-file", required=True)
    p.add_argument("--switchyard", required=True)
    p.add_argument("--tmp", required=True)
    p.add_argument("--out", required=True, help="results path without extension")
    p.add_argument("--port", type=int, default=18900)
    p.add_argument("--slots", type=int, default=2)
    p.add_argument("--ctx", type=int, default=4096, help="context per slot")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--nice", type=int, default=0,
                   help="niceness of the llama.cpp servers; keep other work on the machine nicer")
    p.add_argument("--cache-ram", type=int, default=None)
    p.add_argument("--docs", type=int, default=4)
    p.add_argument("--doc-words", type=int, default=250)
    p.add_argument("--requests", type=int, default=60)
    p.add_argument("--max-tokens", type=int, default=8)
    p.add_argument("--rate", type=float, default=None, help="requests/s; default: from unloaded TTFT")
    p.add_argument("--utilization", type=float, default=0.4)
    p.add_argument("--unloaded-samples", type=int, default=4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--policies", default="round_robin,prefix_aware")
    p.add_argument("--slot-wait", default="auto",
                   help="prefix_aware's slot_wait in seconds; auto: the measured cold TTFT "
                        "(waiting for a document's busy slot pays while it is shorter than "
                        "prefilling the document again in another slot)")
    args = p.parse_args()
    procs = Procs(Path(args.tmp))
    docs = [document(i, args.doc_words) for i in range(args.docs)]
    report = {"args": {k: v for k, v in vars(args).items() if k not in ("tmp", "out")}}
    fleet = Fleet(args, procs)
    try:
        fleet.start("prefix_aware")
        report["sdk_checks"] = sdk_checks(fleet, docs)
        print("sdk checks passed:", json.dumps(report["sdk_checks"]), flush=True)
        fleet.stop()
        fleet.start("round_robin")
        report["unloaded"] = unloaded(fleet, args)
        fleet.stop()
        print("unloaded:", json.dumps(report["unloaded"]), flush=True)
        rate = args.rate or choose_rate(report["unloaded"], 2, args.utilization)
        fleet.slot_wait = (report["unloaded"]["cold_ttft_s"] if args.slot_wait == "auto"
                           else float(args.slot_wait))
        report["slot_wait_s"] = fleet.slot_wait
        runs = []
        for attempt in range(3):
            report["rate_per_s"] = rate
            runs = []
            for policy in args.policies.split(","):
                fleet.start(policy)
                r = replay(fleet, args, docs, rate)
                fleet.stop()
                r["policy"] = policy
                runs.append(r)
                print(f"{policy} at {rate:.3f}/s:", json.dumps(r), flush=True)
            rr = next((r for r in runs if r["policy"] == "round_robin"), None)
            limit = 2 * report["unloaded"]["cold_ttft_s"]
            if args.rate or rr is None or (rr["ttft_p50_s"] or 1e9) < limit:
                break
            print(f"round robin p50 {rr['ttft_p50_s']:.2f} s >= {limit:.2f} s: halving the rate", flush=True)
            report.setdefault("saturated_attempts", []).append({"rate_per_s": rate, "runs": runs})
            rate /= 2
        report["runs"] = runs
    finally:
        procs.stop_all()
    Path(args.out + ".json").write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(report, Path(args.out + ".md"))
    print(Path(args.out + ".md").read_text())
    return 0


def write_markdown(report: dict, path: Path) -> None:
    a, u = report["args"], report["unloaded"]
    lines = [
        f"# Real llama.cpp: {a['docs']} shared documents on 2 servers with -np {a['slots']}",
        "",
        f"`scripts/e2e-llamacpp` ({', '.join(f'{k}={v}' for k, v in a.items() if k not in ('llama_server', 'model_file', 'switchyard'))}).",
        "SmolLM2-135M-Instruct Q4_1 on llama.cpp (llama-cpp-python 0.3.36's vendored source), "
        f"`-t {a['threads']}`, servers under `nice -n {a['nice']}` on a shared 2-core machine (other work there ran under `nice -n 19`); the gateway is a release build.",
        "",
        f"Unloaded (idle servers, median of {u['samples']}): cold TTFT {u['cold_ttft_s']:.3f} s "
        f"(end {u['cold_e2e_s']:.3f} s), warm TTFT {u['warm_ttft_s']:.3f} s (end {u['warm_e2e_s']:.3f} s).",
        f"Rate: {report['rate_per_s']:.3f} requests/s "
        + ("(given)." if a["rate"] else
           f"= {a['utilization']} x 2 servers / cold end-to-end time, halved while round robin's p50 "
           "TTFT was at least twice the cold unloaded TTFT."),
        f"prefix_aware's `slot_wait`: {report.get('slot_wait_s', 0.0):.3f} s "
        + ("(the measured cold TTFT)." if a.get("slot_wait", "auto") == "auto" else "(given)."),
        "",
        "| policy | requests | errors | TTFT p50 s | p90 s | p99 s | cached share | cached / prompt_tokens_total |",
        "|---|---|---|---|---|---|---|---|",
    ]
    f = lambda x: "-" if x is None else f"{x:.3f}"
    for r in report["runs"]:
        lines.append(f"| {r['policy']} | {r['requests']} | {r['errors']} | {f(r['ttft_p50_s'])} | "
                     f"{f(r['ttft_p90_s'])} | {f(r['ttft_p99_s'])} | {f(r['cached_share'])} | "
                     f"{f(r['cached_over_prompt_tokens_total'])} |")
    runs = {r["policy"]: r for r in report["runs"]}
    if "round_robin" in runs and "prefix_aware" in runs:
        rr, pa = runs["round_robin"], runs["prefix_aware"]
        if rr["ttft_p50_s"] and pa["ttft_p50_s"]:
            lines += ["", f"prefix_aware p50 TTFT / round robin's: {pa['ttft_p50_s'] / rr['ttft_p50_s']:.2f}; "
                      f"round robin p50 / cold unloaded TTFT: {rr['ttft_p50_s'] / u['cold_ttft_s']:.2f}."]
    lines += ["", "Cached share = `llamacpp:prompt_tokens_cached_total` / (that + `llamacpp:prompt_tokens_total`), "
              "summed over both servers: this llama.cpp counts `prompt_tokens_total` excluding cached tokens.",
              "", "SDK checks: " + ", ".join(sorted(report["sdk_checks"])) + " passed."]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
