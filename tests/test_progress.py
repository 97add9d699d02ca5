"""The build's progress report: a bar on a terminal, plain lines in a log."""
from __future__ import annotations

import re

from preprocess.progress import Progress, _duration
from preprocess.readers import InputFile
from preprocess.state import BuildState


def fresh(inputs):
    return BuildState.fresh({}, len(inputs))


def test_a_log_gets_plain_lines_with_share_read_rate_and_eta(capsys):
    inputs = [InputFile(f"/d/{i}.json.gz", "jsonl.gz", 1_000_000) for i in range(4)]
    p = Progress(inputs, fresh(inputs), interval=0, tty=False)
    p.read_bytes(0, 1_000_000)
    p.input_done(0)
    p.read_bytes(1, 500_000)
    p.update(docs=1200, tokens=3_000_000, text_bytes=10_000_000)
    p.close()
    err = capsys.readouterr().err
    assert "\r" not in err  # no bar in a log
    line = err.strip().splitlines()[-1]
    assert re.fullmatch(r"progress: 37\.5% of 4\.0 MB read \(input 2 of 4\), ETA \d+m\d\ds; 1,200 documents, "
                        r"3\.0M tokens, [\d.]+M tokens/s, 0m\d\ds elapsed", line), line


def test_inputs_of_unknown_size_report_documents_only(capsys):
    inputs = [InputFile("hf:x", "hf", None)]
    p = Progress(inputs, fresh(inputs), interval=0, tty=False)
    p.update(docs=5, tokens=100, text_bytes=400)
    line = capsys.readouterr().err.strip()
    assert line.startswith("progress: input 1 of 1; 5 documents, 0.0M tokens") and "ETA" not in line


def test_quiet_and_a_long_interval_print_nothing(capsys):
    inputs = [InputFile("/d/a.jsonl", "jsonl", 10)]
    for kwargs in ({"disable": True, "interval": 0}, {"interval": 3600}):
        p = Progress(inputs, fresh(inputs), tty=False, **kwargs)
        p.update(docs=1, tokens=2, text_bytes=3)
        p.close()
    assert capsys.readouterr().err == ""


def test_durations_read_as_a_person_would():
    assert _duration(5) == "0m05s" and _duration(754) == "12m34s" and _duration(3 * 3600 + 125) == "3h02m"


def test_a_cut_file_counts_what_the_plan_expects_to_read_of_it_not_its_size(capsys):
    # a sampled build reads the start of 2 GB files: the share read and the ETA follow those starts
    inputs = [InputFile(f"http://h/{i}.json.gz", "jsonl.gz", 2_000_000_000) for i in range(2)]
    p = Progress(inputs, fresh(inputs), interval=0, tty=False, expected=[100_000_000, None])
    p.read_bytes(0, 150_000_000)  # read past the estimate: never counted past it
    p.input_done(0)
    p.read_bytes(1, 1_050_000_000)
    p.update(docs=1, tokens=2, text_bytes=3)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("progress: 54.8% of 2.10 GB read (input 2 of 2), ETA"), line
