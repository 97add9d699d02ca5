"""The build: inputs -> tokenizer -> encoded documents -> train/val shards -> manifest.

The token stream is a pure function of the inputs and the output-shaping options: inputs are read in
resolve order, records in file order, and encoded batches are consumed in submission order whatever
the number of worker processes, so the shards are byte-identical for any ``--workers``. Each document
goes to val when the first 8 bytes of sha256(its id, or its text when it has none), read as a
fraction of 2**64, are below ``--val-fraction``.

Who does what: this process reads; for JSONL inputs it only decompresses and cuts whole lines, and
the workers parse, encode and lay each batch out per split (parquet, txt and hf: records are read
here). This process then hands the batches to the shard writers in order and keeps the books.

Resumption: after every batch that finished a shard, ``OUT/.build/state.json`` is replaced atomically
with the stream position (input index, records consumed from it, and for a JSONL input the
decompressed bytes and lines they end at), the counters, the shard entries and the names of files
holding both writers' unflushed buffers. A rerun re-reads the current input, skips what was consumed
and continues; since the stream is deterministic, what it writes is what an uninterrupted build would
have written. ``manifest.json`` is written last, then ``.build`` removed.
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

import shards
import tokenizer as tk
from preprocess import readers
from preprocess.encode import Batch, Encoded, EncoderCheck, encode_in_order
from preprocess.options import BuildOptions, differences, select_part
from preprocess.progress import Progress, print_summary
from preprocess.state import (BuildState, clear_output, has_foreign_output, load_state, remove_temporaries,
                              save_state)

BATCH_CHARS = 1 << 20  # text per encode batch: large enough to amortise hand-offs, small for memory
CHUNK_BYTES = 1 << 20  # JSONL per batch, parsed by the worker that encodes it
BATCH_DOCS = 4096
# the fast engine must give HF's ids on the first documents before its output is used: this many, or
# this much text (about 60k tokens; HF encodes them in about 0.1 s, while the first batches encode; the
# property-based tests in tests/test_encoder_equivalence.py are the broader proof)
ENCODER_SAMPLE_DOCS = 1000
ENCODER_SAMPLE_BYTES = 1 << 18
MAX_REPORTED_SKIPS = 5


class BuildError(Exception):
    """A build problem the user can act on; the message says what to do."""


def _add_documents(enc: Encoded, limit: int, writers: dict, state: BuildState, stats: dict) -> bool:
    """Hand the batch's first ``limit`` documents to the split writers and count them; True when a
    shard was written."""
    wrote = False
    for split in shards.SPLITS:
        lengths = enc.lengths[:limit][enc.is_val[:limit] == (split == "val")]
        if not len(lengths):
            continue
        n = int(lengths.sum()) + len(lengths)  # the first documents of a split are a prefix of its tokens
        entries = writers[split].add_block(enc.tokens[split][:n], lengths)
        state.shards += entries
        wrote = wrote or bool(entries)
        for counts in (stats, state.totals[split]):
            counts["documents"] += len(lengths)
            counts["tokens"] += n
    return wrote


class _EngineRejected(Exception):
    """The fast engine failed its check before any of its output was used; ``encoder`` replaces it."""

    def __init__(self, encoder: tk.Encoder):
        super().__init__(encoder.reason)
        self.encoder = encoder


class Builder:
    def __init__(self, opts: BuildOptions, log=None):
        self.opts = opts
        self.out = Path(opts.out)
        # tqdm.write keeps messages from tearing the progress bar
        self.log = log or (lambda msg: tqdm.write(msg, file=sys.stderr))
        self.reported_skips = 0
        self.progress: Progress | None = None  # the encoding pass's bar, fed by the readers as they read

    # -- inputs ----------------------------------------------------------------------------------

    def resolve(self) -> tuple[list[readers.InputFile], dict]:
        """The inputs of this build (its part) and a note on where they came from."""
        o = self.opts
        if not o.inputs and not o.input_list:
            from preprocess.default_corpus import default_corpus_dir, ensure_default_corpus
            corpus = default_corpus_dir(self.out)
            ensure_default_corpus(corpus)  # written once, then reused while its checksums hold
            self.note(f"no --input given: building on the built-in default corpus (Python's documentation) "
                      f"in {corpus}")
            return self._part(readers.resolve_inputs([str(corpus)])), {"source": "default corpus"}
        try:
            inputs = readers.resolve_inputs(list(o.inputs), o.input_list, o.txt_blocks)
            if not inputs:
                raise ValueError(f"no input files in {o.input_list or o.inputs}")
            readers.probe(inputs[0], o.text_field)
            return self._part(inputs), {"source": "input"}
        except (readers.BadInputFile, OSError, ValueError) as e:
            if not o.fallback_input:
                raise BuildError(f"cannot read the input: {e}") from None
            self.log(f"the input cannot be opened ({e}); using --fallback-input {o.fallback_input}")
            try:
                inputs = readers.resolve_inputs([o.fallback_input], None, o.txt_blocks)
                readers.probe(inputs[0], o.text_field)
            except (readers.BadInputFile, OSError, ValueError, IndexError) as e2:
                raise BuildError(f"neither the input ({e}) nor --fallback-input {o.fallback_input} ({e2}) "
                                 f"can be read") from None
            return self._part(inputs), {"source": "fallback", "fallback_input": o.fallback_input,
                                        "primary_error": str(e)}

    def _part(self, inputs: list) -> list:
        if self.opts.tokenizer_only:
            return inputs  # one tokenizer for all parts: trained on the sample of the whole input
        selected = select_part(inputs, self.opts.part)
        if not selected:
            raise BuildError(f"--part {self.opts.part} selects none of the {len(inputs)} input files; "
                             f"use fewer parts than files")
        return selected

    def records(self, inputs, start: int = 0, skip: int = 0, progress: bool = True,
                stop: int | None = None) -> Iterator[tuple[int, int, object]]:
        """``(input index, item index, Record | Skipped | BadInputFile | None)`` from input ``start`` to
        ``stop``, skipping the first ``skip`` items of input ``start`` (consumed before an interruption);
        None ends an input. ``progress``: feed the bytes read to the encoding pass's bar (not for the samples)."""
        for i in range(start, len(inputs) if stop is None else stop):
            n = 0
            try:
                on_bytes = (lambda n, i=i: self.progress.read_bytes(i, n)) if self.progress and progress else None
                for item in readers.read_records(inputs[i], self.opts.text_field, self.opts.txt_blocks,
                                                 on_bytes=on_bytes):
                    if i == start and n < skip:
                        n += 1
                        continue
                    yield i, n, item
                    n += 1
            except readers.BadInputFile as e:
                yield i, n, e
                continue
            yield i, n, None  # end of input

    def note(self, msg: str) -> None:
        """What the build is doing (not shown with --quiet); ``log`` is for what the user must know."""
        if not self.opts.quiet:
            self.log(msg)

    def _log_encoder(self, enc: tk.Encoder) -> None:
        # falling back to the slower engine unasked is worth a warning; the rest is a note
        unasked_fallback = enc.engine == "hf" and self.opts.encoder != "hf"
        (self.log if unasked_fallback else self.note)(f"encoder: {enc.engine} ({enc.reason})")

    def _report_skip(self, inp, item) -> None:
        if self.reported_skips < MAX_REPORTED_SKIPS:
            self.log(f"skipped {inp.path}:{item.line}: {item.reason} ({item.detail})")
        elif self.reported_skips == MAX_REPORTED_SKIPS:
            self.log("further skipped records are only counted (see the manifest's \"skipped\")")
        self.reported_skips += 1

    def batches(self, inputs, start: int, skip: int, resume: list | None = None) -> Iterator[Batch]:
        """The batches of every input from ``start`` on; ``skip`` items of input ``start`` were consumed
        before an interruption (and ``resume``, [bytes, lines], says where they end in a JSONL input)."""
        for i in range(start, len(inputs)):
            if inputs[i].kind in readers.LINE_KINDS:
                yield from self._chunk_batches(inputs, i, *(resume or (0, 0)) if i == start else (0, 0))
            else:
                yield from self._record_batches(inputs, i, skip if i == start else 0)

    def _chunk_batches(self, inputs, i: int, byte_start: int, line_start: int) -> Iterator[Batch]:
        on_bytes = (lambda n: self.progress.read_bytes(i, n)) if self.progress else None
        byte_end, line_end = byte_start, line_start
        try:
            for chunk, newlines in readers.line_chunks(inputs[i], CHUNK_BYTES, byte_start, line_start,
                                                       on_bytes=on_bytes):
                byte_end += len(chunk)
                yield Batch(i, raw=chunk, first_line=line_end, byte_end=byte_end, line_end=line_end + newlines)
                line_end += newlines
        except readers.BadInputFile as e:
            yield Batch(i, bad=str(e), byte_end=byte_end, line_end=line_end)
            return
        yield Batch(i, done=True, byte_end=byte_end, line_end=line_end)

    def _record_batches(self, inputs, i: int, skip: int) -> Iterator[Batch]:
        batch, chars = Batch(i, end=skip), 0
        for _, n, item in self.records(inputs, i, skip, stop=i + 1):
            if isinstance(item, readers.Record):
                batch.texts.append(item.text)
                batch.ids.append(item.id)
                batch.positions.append(n)
                batch.end = n + 1
                chars += len(item.text)
                if chars >= BATCH_CHARS or len(batch.texts) >= BATCH_DOCS:
                    yield batch
                    batch, chars = Batch(i, end=n + 1), 0
            elif isinstance(item, readers.Skipped):
                self._report_skip(inputs[i], item)
                batch.skipped.append((n, item.reason))
                batch.end = n + 1
            else:
                batch.done = item is None
                batch.bad = None if item is None else str(item)
                yield batch

    # -- tokenizer -------------------------------------------------------------------------------

    def sample_texts(self, inputs, limit_bytes: int | None) -> Iterator[str]:
        """Document texts in stream order, repaired, up to ``limit_bytes`` of UTF-8 (the last one cut).

        A bad input ends its own contribution and the sample goes on with the next one, whatever
        --skip-bad-files says, so the tokenizer does not depend on it (the main pass reports the file).
        """
        total = 0
        for _, _, item in self.records(inputs, progress=False):
            if not isinstance(item, readers.Record):
                continue
            text = tk.repair_surrogates(item.text)[0]
            if limit_bytes is not None:
                size = len(text.encode("utf-8"))
                if total + size >= limit_bytes:
                    cut = text.encode("utf-8")[: limit_bytes - total].decode("utf-8", "ignore")
                    if cut:
                        yield cut
                    return
                total += size
            yield text

    def prepare_tokenizer(self, inputs, given_sha: str | None):
        """Train (or copy, or reuse after an interruption) OUT/tokenizer.json and read it.

        ``given_sha``: the fingerprint an interrupted build started with, which must not change.
        """
        o, path = self.opts, self.out / shards.TOKENIZER_NAME
        if o.tokenizer is not None:
            src = Path(o.tokenizer)
            if src.resolve() != path.resolve():
                shutil.copyfile(src, path.with_name(".tokenizer.json.copy"))
                path.with_name(".tokenizer.json.copy").replace(path)
        elif not path.exists():
            t0 = time.perf_counter()
            self.note(f"training a {o.vocab_size:,}-token byte-level BPE on up to the first "
                      f"{o.tokenizer_sample_bytes / 1e6:,.0f} MB of text (--tokenizer-sample-bytes)")
            tok = tk.train_bpe(self.sample_texts(inputs, o.tokenizer_sample_bytes), vocab_size=o.vocab_size,
                               show_progress=not o.quiet and sys.stderr.isatty())
            tk.save(tok, path)
            self.note(f"tokenizer trained in {time.perf_counter() - t0:.1f} s -> {path}")
        # loaded and fingerprinted once, up front, when given: the copy has the same bytes
        loaded = self.given if o.tokenizer is not None else tk.read(path)
        if given_sha is not None and loaded.sha256 != given_sha:
            raise BuildError(f"{path} is not the tokenizer this build started with; use --overwrite to rebuild")
        return loaded

    def encoder_sample(self, inputs) -> list[str]:
        sample = []
        for text in self.sample_texts(inputs, ENCODER_SAMPLE_BYTES):
            sample.append(text)
            if len(sample) >= ENCODER_SAMPLE_DOCS:
                break
        return sample

    def start_encoder(self, loaded: tk.TokenizerFile, inputs) -> tuple[tk.Encoder, EncoderCheck | None]:
        """The encoder to start with and, for the fast engine, its equivalence check running in a thread.

        The check (HF's ids on a sample, about 0.1 s) overlaps the first batches; encode_all waits for
        it before it takes the first batch's ids, so nothing is written with an engine that failed it.
        """
        candidate = tk.candidate_encoder(loaded.tok, self.opts.encoder, loaded.spec)
        if candidate.engine != "tiktoken":
            self._log_encoder(candidate)
            return candidate, None
        return candidate, EncoderCheck(lambda: tk.verify_encoder(candidate, loaded.tok, self.encoder_sample(inputs),
                                                                 self.opts.encoder))

    # -- the build -------------------------------------------------------------------------------

    def check_output(self, shaping: dict, given_sha: str | None) -> BuildState | None | str:
        """Decide what to do with what is already in OUT: ``"done"``, a state to resume, or None (fresh)."""
        o = self.opts
        manifest_path = self.out / shards.MANIFEST_NAME
        if o.overwrite:
            clear_output(self.out, keep=o.tokenizer)
            return None
        if manifest_path.exists():
            m = shards.load_manifest(self.out)
            diff = differences(m["options"], shaping)
            if given_sha is not None and given_sha != m["tokenizer_sha256"]:
                diff.append(f"--tokenizer {o.tokenizer} is not the tokenizer the dataset was built with")
            if diff:
                raise BuildError(f"{self.out} holds a dataset built with different options: " + "; ".join(diff)
                                 + ". Use another --out, or --overwrite to replace it")
            # same options, but are these still its inputs? (files added to an input directory, a file
            # replaced): "up to date" must not hide them
            inputs, _ = self.resolve()
            now = {(_same_file_key(x.path), x.kind, x.size) for x in inputs}
            then = {(_same_file_key(i["path"]), i["kind"], i["size"]) for i in m["inputs"]}
            if now != then:
                changed = [f"{len(now - then)} new or changed", f"{len(then - now)} gone or changed"]
                example = sorted(now ^ then)[0][0]
                raise BuildError(f"{self.out} was built from other input files than these ({', '.join(changed)}, "
                                 f"e.g. {example}). Use another --out, or --overwrite to rebuild it")
            return "done"
        state = load_state(self.out)
        if state is not None:
            diff = differences(state.options, shaping)
            if given_sha is not None and given_sha != state.tokenizer_sha256:
                diff.append(f"--tokenizer {o.tokenizer} is not the tokenizer the build started with")
            if diff:
                raise BuildError(f"{self.out} holds an unfinished build with different options: " + "; ".join(diff)
                                 + ". Rerun with the same options to resume it, or --overwrite to start over")
            return state
        if has_foreign_output(self.out, o.tokenizer):
            raise BuildError(f"{self.out} holds shard or tokenizer files but no build state or manifest; "
                             f"use another --out, or --overwrite to replace them")
        return None

    def run(self) -> dict | None:
        o = self.opts
        self.t_start = time.perf_counter()
        o.validate()
        shaping = o.shaping()
        given_sha = None
        if o.tokenizer is not None:
            self.given = tk.read(o.tokenizer)
            given_sha = self.given.sha256
            dtype = shards.choose_dtype(self.given.tok.get_vocab_size(), o.dtype)
        else:
            # refused up front, before any input is read or anything trained
            dtype = shards.choose_dtype(o.vocab_size, o.dtype)
        self.out.mkdir(parents=True, exist_ok=True)
        with shards.directory_lock(self.out, "python -m preprocess"):
            return self._run_locked(shaping, given_sha, dtype)

    def _run_locked(self, shaping: dict, given_sha: str | None, dtype: str) -> dict | None:
        o = self.opts
        if o.tokenizer_only:
            return self.tokenizer_only()
        if o.part is not None and o.tokenizer is None:
            raise BuildError("--part needs --tokenizer FILE, so that all parts share one tokenizer and can be "
                             "merged: train it once with `python -m preprocess --tokenizer-only --out DIR "
                             "[the same --input ...]`, then build every part with --tokenizer DIR/tokenizer.json")
        remove_temporaries(self.out)
        found = self.check_output(shaping, given_sha)
        if found == "done":
            shutil.rmtree(self.out / ".build", ignore_errors=True)  # left if killed just after the manifest
            self.log(f"{self.out} is up to date (a finished dataset built with these options); nothing to do")
            return None
        inputs, source = self.resolve()
        state = found or BuildState.fresh(shaping, inputs)
        if found is not None:
            self._accept_inputs(state, inputs)
            state.options = shaping  # may differ from the saved ones in resume-neutral options only
            self.log(f"resuming the build in {self.out}: {len(state.shards)} shards done, input "
                     f"{state.position[0] + 1} of {len(inputs)}")
        save_state(self.out, state)  # before anything else is written, so OUT is known to be ours
        loaded = self.prepare_tokenizer(inputs, state.tokenizer_sha256)
        if state.tokenizer_sha256 is None:
            state.tokenizer_sha256 = loaded.sha256
            save_state(self.out, state)
        encoder, check = self.start_encoder(loaded, inputs)
        try:
            return self.encode_all(inputs, source, state, loaded.tok, encoder, dtype, check)
        except _EngineRejected as e:  # nothing was written with the fast engine: start over with HF
            return self.encode_all(inputs, source, state, loaded.tok, e.encoder, dtype)

    def _accept_inputs(self, state: BuildState, inputs) -> None:
        """Refuse to resume over other input files, except the one the build stopped on as bad when it
        has been replaced (re-downloaded): the build goes on inside it where the damage began."""
        now = [_input_key(x) for x in inputs]
        if state.inputs == now:
            return
        i = state.position[0]
        replaced = (len(now) == len(state.inputs) and i < len(now)
                    and [k for k, (a, b) in enumerate(zip(state.inputs, now)) if a != b] == [i]
                    and state.inputs[i][:2] == now[i][:2]
                    and str(state.input_stats[i]["status"]).startswith("bad: "))
        if not replaced:
            raise BuildError(f"the input files differ from those the unfinished build in {self.out} started "
                             f"with; restore them, or use --overwrite to start over")
        self.log(f"{inputs[i].path} has changed since it failed; going on inside it after the "
                 f"{state.input_stats[i]['records']:,} records read before the damage")
        state.inputs[i] = now[i]
        state.input_stats[i]["status"] = "reading"

    def _checked(self, encoder: tk.Encoder, check: EncoderCheck | None) -> tk.Encoder:
        """Wait for the encoder check: the encoder to go on with, or _EngineRejected."""
        if check is None:
            return encoder
        verified = check.result()
        self._log_encoder(verified)
        if verified is not encoder:
            raise _EngineRejected(verified)
        return encoder

    def encode_all(self, inputs, source, state: BuildState, tok, encoder, dtype,
                   check: EncoderCheck | None = None) -> dict:
        o, t0 = self.opts, time.perf_counter()
        eot = tk.eot_id(tok)
        np_dtype = shards.numpy_dtype(dtype)
        writers = {s: shards.ShardWriter(self.out, s, dtype, eot, o.shard_tokens, state.next_index[s])
                   for s in shards.SPLITS}
        for split, (toks, offs) in state.load_pending(self.out).items():
            writers[split].restore(toks, offs)
        start, skip = state.position
        progress = self.progress = Progress(inputs, state, disable=o.quiet)
        stopped = state.stopped
        text_bytes = 0
        items = skip  # items of the current input consumed (raw batches are counted by their workers)
        try:
            batches = self.batches(inputs, start, skip, state.resume) if not stopped else iter(())
            for batch, enc in encode_in_order(batches, encoder, o.val_fraction, np_dtype, eot, o.workers, o.text_field):
                if check is not None:  # before the first batch changes anything
                    encoder, check = self._checked(encoder, check), None
                in_lines = inputs[batch.input_index].kind in readers.LINE_KINDS  # a chunk parsed by a worker
                positions, skipped, batch_end = self._batch_items(inputs, batch, enc, items, in_lines)
                stats = state.input_stats[batch.input_index]
                stats["status"] = "reading"
                limit = len(enc.lengths)
                if o.max_tokens is not None and limit:
                    # stop after the document that brings the total to --max-tokens
                    reached = state.total_tokens() + np.cumsum(enc.lengths + 1)
                    if reached[-1] >= o.max_tokens:
                        limit, stopped = int(np.searchsorted(reached, o.max_tokens, side="left")) + 1, True
                        state.stopped = True  # saved with this batch's shards: a rerun must not read on
                wrote = _add_documents(enc, limit, writers, state, stats)
                end = batch_end if limit == len(enc.lengths) else int(positions[limit - 1]) + 1
                for pos, reason in skipped:
                    if pos < end:
                        stats["skipped"][reason] = stats["skipped"].get(reason, 0) + 1
                        state.skipped[reason] = state.skipped.get(reason, 0) + 1
                stats["records"] = end
                state.repaired += enc.repaired
                text_bytes += enc.text_bytes
                state.position = (batch.input_index, end)
                state.resume = [batch.byte_end, batch.line_end] if in_lines else None
                items = end
                if batch.bad is not None and not stopped:
                    stats["status"] = f"bad: {batch.bad}"
                    if not o.skip_bad_files:
                        state.save_pending(self.out, writers)
                        save_state(self.out, state)
                        raise BuildError(
                            f"{batch.bad}\nEvery shard finished before it is valid on disk. Rerun the same command "
                            f"with --skip-bad-files to record the file as bad in the manifest, keep the "
                            f"{stats['documents']} documents read from it and go on; or replace it with a complete "
                            f"copy of the same file and rerun the same command to go on inside it")
                    self.log(f"--skip-bad-files: recorded as bad, going on without the rest of it: {batch.bad}")
                if batch.done and not stopped:
                    stats["status"] = "ok"
                if batch.done or batch.bad is not None:
                    state.position, state.resume, items = (batch.input_index + 1, 0), None, 0
                    progress.input_done(batch.input_index)
                progress.update(limit, int(enc.lengths[:limit].sum()) + limit,
                                enc.text_bytes)
                if wrote:
                    state.save_pending(self.out, writers)
                    save_state(self.out, state)
                if stopped:
                    break
        finally:
            progress.close()
        if check is not None:  # no batch was taken (a resumed build already at --max-tokens)
            try:
                encoder = self._checked(encoder, check)
            except _EngineRejected as e:
                encoder = e.encoder
        state.stopped = stopped
        for s in shards.SPLITS:
            entry = writers[s].flush()
            if entry:
                state.shards.append(entry)
        for k, stats in enumerate(state.input_stats):
            if stats["status"] in ("pending", "reading"):
                stats["status"] = "not read: --max-tokens reached" if stats["status"] == "pending" else \
                    "partly read: --max-tokens reached"
        manifest = self.manifest(inputs, source, state, tok, encoder, dtype, eot)
        shards.write_manifest(self.out, manifest)
        shutil.rmtree(self.out / ".build", ignore_errors=True)
        if not o.quiet:
            print_summary(self.out, manifest, time.perf_counter() - t0, progress.tokens - progress.start_tokens,
                          text_bytes, time.perf_counter() - self.t_start)
        return manifest

    def _batch_items(self, inputs, batch: Batch, enc: Encoded, consumed: int, in_lines: bool) -> tuple:
        """``(positions, skipped, end)`` of a batch in its input's items: each document's item index,
        (item index, reason) per skipped record, and the items consumed after the batch. A JSONL chunk's
        (``in_lines``) items were counted by the worker that parsed it and follow the ``consumed`` before
        it; its skipped records are reported here, in input order."""
        if not in_lines:  # read in this process: known already
            return batch.positions, batch.skipped, batch.end
        for _, item in enc.skipped:
            self._report_skip(inputs[batch.input_index], item)
        return (consumed + enc.positions, [(consumed + k, item.reason) for k, item in enc.skipped],
                consumed + enc.items)

    def manifest(self, inputs, source, state, tok, encoder, dtype, eot) -> dict:
        order = {s: i for i, s in enumerate(shards.SPLITS)}
        entries = sorted(state.shards, key=lambda e: (order[e["split"]], e["file"]))
        return {
            "format_version": shards.FORMAT_VERSION,
            "dtype": dtype,
            "vocab_size": tok.get_vocab_size(),
            "eot_id": eot,
            "tokenizer_sha256": state.tokenizer_sha256,
            "shards": entries,
            "totals": state.totals,
            "inputs": [{"path": x.path, "kind": x.kind, "size": x.size, **stats}
                       for x, stats in zip(inputs, state.input_stats)],
            "skipped": dict(sorted(state.skipped.items())),
            "options": state.options,
            "source": source,
            "encoder": {"engine": encoder.engine, "reason": encoder.reason},
            "split": {"method": "sha256(id, else text)[:8] as a fraction of 2**64 < val_fraction",
                      "val_fraction": self.opts.val_fraction},
            "separator": "one eot_id before every document; .idx holds each separator's offset",
            "repaired": {"lone_surrogates": state.repaired},
            "stopped_at_max_tokens": state.stopped,
        }

    def tokenizer_only(self) -> None:
        path = self.out / shards.TOKENIZER_NAME
        if path.exists() and not self.opts.overwrite:
            raise BuildError(f"{path} exists; use --overwrite to train a new one")
        if path.exists():
            path.unlink()
        inputs, _ = self.resolve()
        self.prepare_tokenizer(inputs, None)
        self.note(f"wrote {path}; build each part with --tokenizer {path}")


def _same_file_key(path: str) -> str:
    """A local path made absolute (``data/x`` and ``/home/me/data/x`` are one file); URLs and hf: as they are."""
    return path if readers.is_url(path) or path.startswith(readers.HF_PREFIX) else os.path.realpath(path)


def _input_key(x) -> list:
    return [x.path, x.kind, x.size]


def build(opts: BuildOptions) -> dict | None:
    """Run a build; returns the manifest, or None when OUT was already up to date."""
    return Builder(opts).run()
