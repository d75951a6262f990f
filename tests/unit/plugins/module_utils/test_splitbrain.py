from __future__ import annotations

import json

from ansible_collections.fediflow.dr.plugins.module_utils import splitbrain


def _ack(region, seq, at):
    return {"region": region, "seq": seq, "t0": at - 0.01, "t1": at}


def test_a_clean_hand_over_and_a_later_failback_are_one_writer_at_a_time():
    handover = [_ack("a", i, 10 + i * 0.1) for i in range(10)] + [_ack("b", i, 12 + i * 0.1) for i in range(10)]
    assert splitbrain.two_writers(handover, 1.0) == []
    failback = handover + [_ack("a", 100 + i, 30 + i * 0.1) for i in range(5)]
    assert splitbrain.two_writers(failback, 1.0) == []


def test_interleaved_acknowledgements_are_two_writers():
    split = [_ack("a", i, 10 + i * 0.1) for i in range(10)] + [_ack("b", 1, 10.45)]
    found = splitbrain.two_writers(split, 1.0)
    assert len(found) == 1 and found[0][1]["region"] == "b"


def test_lost_writes_must_be_the_old_primarys_tail():
    acks = [_ack("a", i, 10 + i) for i in range(6)] + [_ack("a", 99, 200)]
    assert splitbrain.lost_tail(acks, acks[4:6], "a", until=100)
    assert not splitbrain.lost_tail(acks, [acks[2]], "a", until=100)   # a hole in the middle
    assert not splitbrain.lost_tail(acks, [_ack("b", 1, 11)], "a", until=100)
    assert splitbrain.lost_tail(acks, [], "a", until=100)


def test_summarize_counts_and_reads_only_sane_records(tmp_path):
    path = tmp_path / "a.jsonl"
    lines = [json.dumps(_ack("a", 1, 10)), json.dumps(_ack("a", 2, 10.1)), json.dumps({"region": "a", "seq": 3,
             "error": "read-only", "t0": 10.2}), "{not json", json.dumps({"region": 5, "seq": "x"})]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    records = splitbrain.read_records([str(path), str(tmp_path / "absent.jsonl")])
    assert len(records) == 3
    out = splitbrain.summarize(records, {("a", 1)})
    assert out["acked"] == {"a": 2} and out["refused"] == 1 and out["lost"] == 1 and out["writers_at_once"] == 0
    assert out["lost_is_tail"] is False  # without a lost region, any loss fails
    assert splitbrain.summarize(records, {("a", 1)}, lost_region="a", lost_until=100)["lost_is_tail"] is True
