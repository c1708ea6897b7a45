"""Open-ended scoring: verdict parsing, the HTTP judge against a flaky local server, the cache, the local
Hugging Face judge, and the string-match metric."""

import json
import socket
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from merv.eval.judge import (
    JUDGE_PROMPT_VERSION,
    JudgeCache,
    JudgeError,
    LocalHFJudge,
    MalformedReplyError,
    OpenAIChatJudge,
    Verdict,
    exact_match,
    judge_predictions,
    judge_report,
    normalize_answer_text,
    parse_verdict,
    string_match_report,
    summarize_judgements,
    token_f1,
)

# ---------------------------------------------------------------------------------------------- verdicts


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("{'pred': 'yes', 'score': 4}", Verdict("yes", 4)),
        ('{"pred": "no", "score": 0}', Verdict("no", 0)),
        ("Sure! Here it is: {'pred': 'Yes', 'score': '5'} Hope this helps.", Verdict("yes", 5)),
        ("{'pred': 'no.', 'score': 2.8}", Verdict("no", 2)),
    ],
)
def test_parse_verdict_accepts_json_and_python_dicts(reply, expected):
    assert parse_verdict(reply) == expected


@pytest.mark.parametrize(
    "reply",
    [
        "yes, score 4",
        "{'pred': 'maybe', 'score': 3}",
        "{'pred': 'yes'}",
        "{'pred': 'yes', 'score': 9}",
        "{'pred': 'yes', 'score': 'high'}",
        "{pred: yes}",
        "{'pred': 'yes', 'score': True}",
    ],
)
def test_parse_verdict_rejects_malformed_replies(reply):
    with pytest.raises(MalformedReplyError):
        parse_verdict(reply)


# ------------------------------------------------------------------------------------- flaky HTTP server


class FlakyChatServer:
    """Chat-completions endpoint on 127.0.0.1 whose behaviour per question follows a script.

    Each question text maps to a list of actions, one per attempt (the last repeats): "ok-yes", "ok-no",
    "500", "429", "400", "hang" (never answer: hold the request until the client hangs up), "malformed" (a
    reply without a verdict), "garbage" (a body that is not JSON).

    A hang never depends on how fast the machine is: the client's timeout is the only way out of it, and
    `hung_up` is released once for every request the client abandoned.
    """

    def __init__(self, script: dict[str, list[str]]):
        self.script = script
        self.calls: Counter = Counter()
        self.bodies: list[dict] = []
        self.hung_up = threading.Semaphore(0)
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            # Bounds every read, so a hung request whose client never hangs up cannot pin its thread forever.
            timeout = 60

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                user = body["messages"][1]["content"]
                question = user.split("\n", 1)[0].removeprefix("Question: ")
                with server.lock:
                    attempt = server.calls[question]
                    server.calls[question] += 1
                    server.bodies.append({"body": body, "auth": self.headers.get("Authorization"), "path": self.path})
                actions = server.script[question]
                action = actions[min(attempt, len(actions) - 1)]
                try:
                    if action == "hang":
                        # The client sends nothing more: the read ends when it closes the connection.
                        if self.rfile.read(1) == b"":
                            server.hung_up.release()
                        return
                    if action in ("500", "429", "400"):
                        self.send_response(int(action))
                        self.end_headers()
                        self.wfile.write(b"error")
                        return
                    if action == "garbage":
                        payload = b"<html>bad gateway</html>"
                    else:
                        content = {
                            "ok-yes": "{'pred': 'yes', 'score': 4}",
                            "ok-no": '{"pred": "no", "score": 1}',
                            "malformed": "I think the prediction is mostly right.",
                        }[action]
                        payload = json.dumps(
                            {"choices": [{"message": {"role": "assistant", "content": content}}]}
                        ).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError, TimeoutError):
                    pass  # the client is gone

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


SCRIPT = {
    "q0": ["ok-yes"],
    "q1": ["500", "ok-yes"],
    "q2": ["429", "ok-no"],  # rate limited: retried
    "q3": ["malformed", "ok-yes"],
    "q4": ["500"],  # never recovers
    "q5": ["malformed"],  # never recovers
    "q6": ["garbage", "500", "ok-yes"],
    "q7": ["400"],  # refused: not retried
    "q8": ["ok-no"],
    "q9": ["ok-yes"],
}


def records():
    return [
        {
            "id": f"id{i}",
            "question": f"q{i}",
            "answer": f"answer {i}",
            "pred": f"prediction {i}",
            "question_type": "0" if i % 2 else "4",
        }
        for i in range(10)
    ]


def make_judge(url, **kw):
    """By default a timeout that no answered request comes near, however busy the machine: only a scripted
    hang ever times out, so how many attempts an item takes follows from the script alone."""
    settings = {"timeout_s": 60.0, "max_retries": 3, "backoff_s": 0.01, "concurrency": 4, **kw}
    return OpenAIChatJudge(url, "judge-model-x", api_key_env="MERV_TEST_JUDGE_KEY", **settings)


@pytest.fixture
def refused_url():
    """An endpoint that refuses connections: its port is held by a socket that never listens, so nothing
    else on the machine can take it while the test runs."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def test_http_judge_retries_counts_failures_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("MERV_TEST_JUDGE_KEY", "sk-test-123")
    cache = JudgeCache(tmp_path / "cache")
    with FlakyChatServer(SCRIPT) as server:
        judge = make_judge(server.url)
        items = judge_predictions(records(), judge, cache)

        # Every item appears exactly once, in input order.
        assert [it.id for it in items] == [f"id{i}" for i in range(10)]
        by_id = {it.id: it for it in items}
        failed = {it.id for it in items if it.verdict is None}
        assert failed == {"id4", "id5", "id7"}
        assert by_id["id2"].verdict == Verdict("no", 1)
        assert by_id["id6"].verdict == Verdict("yes", 4)
        assert "HTTP 400" in by_id["id7"].error and "after 4 attempts" in by_id["id4"].error

        # Attempts per item: retries only where needed (5xx, 429, unreadable replies); a 400 is not retried.
        assert (
            server.calls["q0"] == 1 and server.calls["q1"] == 2 and server.calls["q2"] == 2 and server.calls["q3"] == 2
        )
        assert (
            server.calls["q4"] == 4 and server.calls["q5"] == 4 and server.calls["q6"] == 3 and server.calls["q7"] == 1
        )

        # Requests follow the chat-completions protocol.
        sent = server.bodies[0]
        assert sent["path"] == "/v1/chat/completions" and sent["auth"] == "Bearer sk-test-123"
        assert sent["body"]["temperature"] == 0 and sent["body"]["model"] == "judge-model-x"
        assert [m["role"] for m in sent["body"]["messages"]] == ["system", "user"]

        summary = summarize_judgements(items, {"0": "motion", "4": "color"})
        assert summary["total"] == 10 and summary["judged"] == 7 and summary["failed"] == 3
        assert summary["yes"] + summary["no"] == summary["judged"]
        assert summary["yes"] == 5 and summary["no"] == 2
        assert summary["accuracy"] == pytest.approx(5 / 7)
        assert summary["mean_score"] == pytest.approx((5 * 4 + 2 * 1) / 7)
        assert set(summary["per_type"]) == {"0: motion", "4: color"}
        assert sum(v["total"] for v in summary["per_type"].values()) == 10

        # A rerun pays nothing for judged items: only the failed ones are asked again.
        before = Counter(server.calls)
        again = judge_predictions(records(), make_judge(server.url), cache)
        new_calls = server.calls - before
        assert set(new_calls) == {"q4", "q5", "q7"}
        assert sum(it.cached for it in again) == 7
        assert [it.verdict for it in again if it.cached] == [it.verdict for it in items if it.verdict is not None]


def test_cache_key_depends_on_model_prompt_version_and_content(tmp_path):
    base = JudgeCache.key("m", "q", "a", "p")
    assert base == JudgeCache.key("m", "q", "a", "p", JUDGE_PROMPT_VERSION)
    assert (
        len(
            {
                base,
                JudgeCache.key("m2", "q", "a", "p"),
                JudgeCache.key("m", "q", "a", "p2"),
                JudgeCache.key("m", "q", "a", "p", "other-version"),
            }
        )
        == 4
    )
    cache = JudgeCache(tmp_path)
    cache.put(base, Verdict("yes", 3), {"id": "x"})
    assert cache.get(base) == Verdict("yes", 3)
    path = next(tmp_path.rglob(f"{base}.json"))
    path.write_text("{broken")
    assert cache.get(base) is None  # unreadable entries are recomputed, not trusted


def test_duplicate_ids_and_missing_fields_are_refused():
    judge = make_judge("http://127.0.0.1:9")
    recs = records()[:2]
    recs[1]["id"] = recs[0]["id"]
    with pytest.raises(ValueError, match="occur more than once"):
        judge_predictions(recs, judge)
    with pytest.raises(ValueError, match=r"record 0 \(id 1\) lacks field\(s\) \['pred'\]"):
        judge_predictions([{"id": 1, "question": "q", "answer": "a"}], judge)
    # Errors name the predictions file and the record's id, wherever the records came from.
    incomplete = [{"id": "v1", "question": "q", "answer": "a", "pred": "a"}, {"question_id": "v2", "pred": "b"}]
    where = r"preds\.jsonl: prediction record 1 \(id 'v2'\) lacks field\(s\) \['id', 'question', 'answer'\]"
    with pytest.raises(ValueError, match=where):
        judge_predictions(incomplete, judge, source="preds.jsonl")
    with pytest.raises(ValueError, match=where):
        judge_report(incomplete, None, source="preds.jsonl")


def test_http_judge_abandons_a_request_that_is_never_answered_and_retries(monkeypatch):
    monkeypatch.setenv("MERV_TEST_JUDGE_KEY", "sk-test-123")
    # Only the client's timeout ends the first attempt; the retry is answered at once, far within the timeout.
    with FlakyChatServer({"q2": ["hang", "ok-no"]}) as server:
        assert make_judge(server.url, timeout_s=2.0).judge("q2", "a", "p") == Verdict("no", 1)
        assert server.hung_up.acquire(timeout=60)  # the client closed the abandoned connection
        assert server.calls["q2"] >= 2


def test_http_judge_reports_a_server_that_never_answers(monkeypatch):
    monkeypatch.setenv("MERV_TEST_JUDGE_KEY", "sk-test-123")
    with FlakyChatServer({"q0": ["hang"]}) as server:
        judge = make_judge(server.url, timeout_s=0.2, max_retries=1)
        with pytest.raises(JudgeError, match="after 2 attempts: .*timed out"):
            judge.judge("q0", "a", "p")
        assert server.hung_up.acquire(timeout=60) and server.hung_up.acquire(timeout=60)


def test_unreachable_endpoint_fails_items_without_crashing(refused_url):
    judge = OpenAIChatJudge(
        refused_url,
        "m",
        api_key_env="MERV_UNSET_KEY_FOR_TEST",
        timeout_s=60.0,
        max_retries=1,
        backoff_s=0.01,
    )
    with pytest.raises(JudgeError, match="after 2 attempts"):
        judge.judge("q", "a", "p")
    report, items = judge_report(records()[:2], judge)
    assert report["judge"]["failed"] == 2 and report["judge"]["accuracy"] is None
    assert report["judge"]["model"] == "m" and report["judge"]["prompt_version"] == JUDGE_PROMPT_VERSION
    assert report["string_match"]["total"] == 2


def test_skipped_predictions_are_failures_without_judge_calls(tmp_path):
    with FlakyChatServer({"q0": ["ok-yes"]}) as server:
        recs = [
            {"id": "a", "question": "q0", "answer": "x", "pred": "", "status": "skipped", "error": "video not found"}
        ]
        items = judge_predictions(recs, make_judge(server.url))
        assert items[0].verdict is None and "video not found" in items[0].error
        assert server.calls["q0"] == 0


# ----------------------------------------------------------------------------------------- local judge


def _bigram_lm_dir(tmp_path, chain: list[str]):
    """A real Llama checkpoint whose greedy continuation of "... Reply:" is `chain`, token by token.

    Attention and MLP outputs are zeroed, so the last hidden state is the current token's embedding and
    the next token is a fixed function of the current one: the LM head encodes that successor table.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["[UNK]", "[PAD]", "[EOS]", "Reply:", *chain]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]")
    size = 32
    cfg = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=size,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=vocab["[PAD]"],
        eos_token_id=vocab["[EOS]"],
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    lm = LlamaForCausalLM(cfg)
    successor = dict(zip(["Reply:", *chain], [*chain, "[EOS]"], strict=True))
    with torch.no_grad():
        for layer in lm.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        lm.model.embed_tokens.weight.copy_(torch.eye(len(vocab), size))
        head = torch.zeros(len(vocab), size)
        for cur, nxt in successor.items():
            head[vocab[nxt], vocab[cur]] = 10.0
        lm.lm_head.weight.copy_(head)
    out = tmp_path / "judge-lm"
    lm.save_pretrained(out)
    hf_tok.save_pretrained(out)
    return out


def test_local_hf_judge_reads_a_verdict_from_a_real_checkpoint(tmp_path):
    good = _bigram_lm_dir(tmp_path / "good", ["{", '"pred":', '"yes",', '"score":', "4", "}"])
    judge = LocalHFJudge(good)
    assert judge.generate_reply("q", "a", "p").replace(" ", "") == '{"pred":"yes","score":4}'
    assert judge.judge("what is he doing", "dancing", "he dances") == Verdict("yes", 4)
    assert judge.describe()["greedy"] is True and judge.describe()["prompt_version"] == JUDGE_PROMPT_VERSION

    bad = _bigram_lm_dir(tmp_path / "bad", ["{", '"pred":', '"perhaps",', '"score":', "3", "}"])
    items = judge_predictions(records()[:3], LocalHFJudge(bad), JudgeCache(tmp_path / "cache"))
    assert [it.verdict for it in items] == [None, None, None]
    assert all("yes or no" in it.error for it in items)
    assert summarize_judgements(items)["failed"] == 3


# ---------------------------------------------------------------------------------------- string match


def test_squad_normalisation_exact_match_and_f1():
    assert normalize_answer_text("The  Cat, sat!") == "cat sat"
    assert exact_match("A cat.", "the cat") == 1.0
    assert exact_match("dog", "cat") == 0.0
    assert token_f1("a red ball", "the red ball rolls") == pytest.approx(2 * (2 / 2) * (2 / 3) / (2 / 2 + 2 / 3))
    assert token_f1("", "") == 1.0 and token_f1("", "x") == 0.0 and token_f1("blue", "red") == 0.0


def test_string_match_report_per_type_and_skips():
    recs = [
        {"id": "1", "question": "q", "answer": "red", "pred": "Red.", "type": 4},
        {"id": "2", "question": "q", "answer": "walking", "pred": "running", "type": 0},
        {"id": "3", "question": "q", "answer": "red car", "pred": "red", "type": 4},
        {"id": "4", "question": "q", "answer": "x", "pred": "", "type": 0, "status": "skipped"},
    ]
    rep = string_match_report(recs, {"0": "motion", "4": "color"})
    assert rep["total"] == 4 and rep["skipped"] == 1
    assert rep["exact_match"] == pytest.approx(1 / 4)
    assert rep["per_type"]["4: color"]["exact_match"] == pytest.approx(0.5)
    assert rep["per_type"]["4: color"]["f1"] == pytest.approx((1 + 2 / 3) / 2)
    assert rep["per_type"]["0: motion"]["f1"] == 0.0
