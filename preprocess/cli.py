"""The command line: ``python -m preprocess [build options]`` and ``python -m preprocess merge``."""
from __future__ import annotations

import argparse
import sys

from preprocess.options import (
    DEFAULT_SAMPLE_BYTES,
    DEFAULT_SHARD_TOKENS,
    DEFAULT_VAL_FRACTION,
    BuildOptions,
    OptionError,
    parse_count,
    usable_cpus,
)

DESCRIPTION = """\
Build a dataset directory (tokenizer.json, manifest.json, train_*/val_* token shards) from a corpus.

With no --input it builds on the built-in default corpus (Python's own documentation, written out
in Dolma's .json.gz format beside OUT, in .default-corpus/), which needs no network.

What is read is planned first (OUT/plan.json; --plan prints it and stops). Each input belongs to a
source, its file name without the shard number (cc_en_head-0123.json.gz -> cc_en_head). With
--max-tokens the build is a sample: every source gives its share of the whole input (or the share
--mix gives it), from files taken in a seeded order, so 5B tokens of Dolma hold Dolma's mix and
read little more than what they keep; --in-order reads the inputs in the order given until
--max-tokens instead. Without --max-tokens every input is read, in the order given.

The output is byte-identical whatever --workers is, and an interrupted build (Ctrl-C, kill -9,
a crash) resumes where it stopped when the same command is run again.
"""

EPILOG = """\
examples:
  python -m preprocess --out data/demo --vocab-size 8192
      the default corpus, an 8k-token vocabulary
  python -m preprocess --input-list v1_7.txt --out data/dolma-5b --max-tokens 5e9 --plan
      the flagship plan: Dolma's sources, their sizes (HTTP HEAD only) and quotas; nothing is read
  python -m preprocess --input-list v1_7.txt --out data/dolma-5b --max-tokens 5e9
      the flagship build: a 5-billion-token sample in Dolma's proportions, 32k vocabulary
  python -m preprocess --input dolma/*.json.gz --out data/mix --max-tokens 1e9 --mix cc_en_head=0.5,books=0.1
      half common crawl, a tenth books, the rest from the other sources in proportion to their size
  python -m preprocess --input-list v1_7.txt --out data/dolma --skip-bad-files
      every URL or path listed in v1_7.txt, recording unreadable files in the manifest and going on
  python -m preprocess --input corpus.parquet --text-field content --tokenizer tok.json --out data/x
      another text column, an existing tokenizer

building on N machines (each builds a 1/N of the input files, then one merges):
  python -m preprocess --tokenizer-only --input-list urls.txt --out data/tok
  python -m preprocess --input-list urls.txt --tokenizer data/tok/tokenizer.json --part 3/8 --out data/p3
  python -m preprocess merge data/p1 data/p2 ... data/p8 --out data/dolma
      (with --max-tokens each part builds its share of the one plan of the whole list; with
      --in-order, --max-tokens applies to each part separately)

merge:
  python -m preprocess merge PART_DIR ... --out DIR      see `python -m preprocess merge --help`
"""


def _count(text: str) -> int:
    try:
        return parse_count(text)
    except OptionError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m preprocess", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    i = p.add_argument_group("input")
    i.add_argument("--input", nargs="+", action="extend", default=[], metavar="PATH", dest="inputs",
                   help="files, directories (searched recursively), glob patterns, http(s) URLs or "
                        "hf:NAME[:CONFIG][:SPLIT]; several may follow one --input (so --input data/*.json.gz "
                        "works as the shell expands it). Formats: .json(l)[.gz|.zst], .parquet, .txt. "
                        "Default: the built-in corpus")
    i.add_argument("--input-list", metavar="FILE",
                   help="a file of paths or URLs, one per line (e.g. Dolma's urls/v1_7.txt)")
    i.add_argument("--fallback-input", metavar="PATH",
                   help="a source to build from when the input cannot be opened (e.g. hf:allenai/c4:en:train); "
                        "the manifest's \"source\" says which was used")
    i.add_argument("--text-field", default="text", metavar="F",
                   help="JSON field / parquet column holding the text (default: text)")
    i.add_argument("--txt-blocks", action="store_true",
                   help="a .txt file holds one document per blank-line-separated block (default: one per file)")
    i.add_argument("--skip-bad-files", action="store_true",
                   help="when an input file is truncated or corrupt, keep the records read before the damage, "
                        "record the file as bad in the manifest and go on (default: stop with an error; "
                        "rerunning with this flag then resumes)")
    n = p.add_argument_group("the network (http(s) inputs)")
    n.add_argument("--network-patience", type=float, default=600.0, metavar="SECONDS",
                   help="how long a URL may give no byte, through retries that back off up to a minute and "
                        "honour Retry-After, before the build stops with an error; the same command then goes on "
                        "where it stopped (default: 600)")
    n.add_argument("--network-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="a connection that gives no byte for this long, or less than 4 KB/s over this long, is "
                        "stalled: it is named and retried (default: 60)")
    n.add_argument("--verify-cut-files", action="store_true",
                   help="read each file cut at its token budget on to the end of its gzip member, so its checksum "
                        "is checked (--plan says how many bytes that costs; default: a cut file is read only as "
                        "far as the build keeps, and the manifest lists it as not checksum-verified)")
    s = p.add_argument_group("the plan: what is read")
    s.add_argument("--plan", action="store_true", dest="show_plan",
                   help="print the plan (sources, files, bytes, estimated tokens, shares, quotas) and stop; "
                        "only HTTP headers are fetched")
    s.add_argument("--mix", metavar="SOURCE=SHARE,...",
                   help="with --max-tokens: the share of it each named source gets, e.g. cc_en_head=0.5,c4=0.2; "
                        "what the shares leave goes to the unnamed sources in proportion to their size "
                        "(SOURCE=0 leaves one out). Default: every source its share of the whole input")
    s.add_argument("--in-order", action="store_true",
                   help="read the inputs in the order given until --max-tokens, instead of a sample of every "
                        "source")
    s.add_argument("--source-pattern", metavar="REGEX",
                   help="a regular expression with one group, searched in each input's path or URL: the "
                        "group is its source (default: the file name without extension and shard number, "
                        "e.g. cc_en_head-0123.json.gz -> cc_en_head)")
    s.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed of the order in which each source's files are taken (default: 0)")
    t = p.add_argument_group("tokenizer")
    t.add_argument("--tokenizer", metavar="FILE",
                   help="use this tokenizer.json (it must have <|endoftext|>) instead of training one; "
                        "it is copied to OUT/tokenizer.json")
    t.add_argument("--vocab-size", type=_count, default=32000, metavar="N",
                   help="vocabulary of the trained tokenizer (default: 32000)")
    t.add_argument("--tokenizer-sample-bytes", type=_count, default=DEFAULT_SAMPLE_BYTES, metavar="N",
                   help="train on N bytes of document text drawn from every source in its share, from up to "
                        "8 of its files (default: 1e9; the whole input when smaller)")
    t.add_argument("--tokenizer-only", action="store_true",
                   help="only train OUT/tokenizer.json (on the whole input, ignoring --part) and stop; "
                        "for multi-machine builds")
    t.add_argument("--encoder", choices=("auto", "tiktoken", "hf"), default="auto",
                   help="encoding engine: auto uses tiktoken when it gives HF tokenizers' ids on a sample "
                        "(several times faster), else HF; the choice and reason are printed and recorded")
    o = p.add_argument_group("output")
    o.add_argument("--out", required=True, metavar="DIR", help="the dataset directory to write")
    o.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION, metavar="F",
                   help="fraction of documents in the val split, chosen by a hash of each document's id "
                        "(or text) (default: 0.005)")
    o.add_argument("--shard-tokens", type=_count, default=DEFAULT_SHARD_TOKENS, metavar="N",
                   help="tokens per shard; a shard closes after the document that reaches N (default: 100M)")
    o.add_argument("--max-tokens", type=_count, metavar="N",
                   help="build a sample of about N tokens (separators included), e.g. 5e9: every source its "
                        "quota (see --mix, --in-order); the summary shows how close it came (default: the "
                        "whole input)")
    o.add_argument("--dtype", choices=("uint16", "uint32"), default="uint16",
                   help="token id type in the shards; uint16 holds a vocabulary of up to 65,536 (default)")
    o.add_argument("--part", metavar="I/N",
                   help="build only the I-th of N parts of the plan's reads (every N-th, from the I-th); "
                        "needs --tokenizer so the parts can be merged")
    o.add_argument("--overwrite", action="store_true",
                   help="replace what OUT holds (shards, manifest, tokenizer, unfinished build) instead of "
                        "resuming or refusing a build with other options")
    r = p.add_argument_group("running")
    r.add_argument("--workers", type=int, default=usable_cpus(), metavar="N",
                   help="encoding processes (default: the CPUs this process may use); the output does not "
                        "depend on it")
    r.add_argument("--quiet", action="store_true", help="only warnings and errors: no progress bar, notes or summary")
    return p


def parse_build_args(argv: list[str]) -> BuildOptions:
    args = build_parser().parse_args(argv)
    return BuildOptions(**vars(args))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "merge":
        from preprocess.merge import main as merge_main
        return merge_main(argv[1:])
    opts = parse_build_args(argv)
    import shards
    from preprocess.build import build
    try:
        build(opts)
    except shards.PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; every finished shard is kept: run the same command again to resume "
              "(or add --overwrite to start over)", file=sys.stderr)
        return 130
    return 0
