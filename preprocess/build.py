"""The build: inputs -> plan -> tokenizer -> encoded documents -> train/val shards -> manifest.

What is read is decided once, by the plan (``preprocess/plan.py``): which files, in which order, and
how many tokens each may give. This module carries it out. The token stream is a pure function of the
plan and the output-shaping options: reads in plan order, records in file order, encoded batches
consumed in submission order whatever the number of worker processes, so the shards are
byte-identical for any ``--workers``. Each document goes to val when the first 8 bytes of sha256(its
id, or its text when it has none), read as a fraction of 2**64, are below ``--val-fraction``.

Who does what: the read path (``preprocess/read_path.py``) reads, cuts each read into batches and
decides where each read stops; for JSONL inputs this process only decompresses and cuts whole lines,
and the workers parse, encode and lay each batch out per split (parquet, txt and hf: records are read
here). The books (``preprocess/main_pass.py``) hand the kept documents to the shard writers in order
and keep the counts. This module wires them together and runs the phases before them.

Every URL is fetched once per build (``preprocess/fetch.py``): the tokenizer sample, the measurement
of tokens per byte and the main pass read it through one Fetcher whose spool, in ``OUT/.build``, the
main pass continues; a file's spool is deleted once the saved state is past it.

Trust and resumption: a document is kept for good only once everything up to it has passed its
checks (a gzip member's CRC sits at the member's end; plain JSON Lines, parquet and txt are trusted
as read; a file cut at its budget is trusted without the CRC of the member holding the cut, unless
--verify-cut-files). At each such verified point where a shard was finished, ``OUT/.build/state.json``
is replaced atomically with the stream position (read index, records consumed from it, and for a
JSONL input the decompressed bytes and lines they end at), the counters, the shard entries and the
files holding both writers' unflushed buffers. A damaged member rolls the books back to the last
verified point (the shards written since are deleted); a rerun re-reads the current input from its
start (from the spool, for a URL), skips what was consumed and continues, and since the stream is
deterministic it writes what an uninterrupted build would have written. ``manifest.json`` is written
last, then ``.build`` removed.
"""
from __future__ import annotations

import errno
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

import shards
import tokenizer as tk
from preprocess import plan as plans
from preprocess import readers
from preprocess.encode import EncoderCheck, Settings, encode_in_order
from preprocess.errors import BadInputFile, BuildError, DownloadFailed, InputError
from preprocess.fetch import Fetcher, spool_dir
from preprocess.main_pass import MainPass
from preprocess.options import BuildOptions, differences, parse_part, select_part
from preprocess.progress import Progress, print_summary, source_rows
from preprocess.read_path import ReadPath
from preprocess.state import (
    BuildState,
    clear_output,
    has_foreign_output,
    load_state,
    remove_temporaries,
    remove_unlisted_shards,
    save_state,
)

# the fast engine must give HF's ids on the first documents before its output is used: this many, or
# this much text (about 60k tokens; HF encodes them in about 0.1 s, while the first batches encode; the
# property-based tests in tests/test_encoder_equivalence.py are the broader proof). Each text is cut to
# what is left of the budget, so a 50 MB first document costs what 256 KB of text does.
ENCODER_SAMPLE_DOCS = 1000
ENCODER_SAMPLE_BYTES = 1 << 18
ENCODER_SAMPLE_READS = 8  # reads it is drawn from at most


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
        self.retry = opts.retry()
        # URLs are read through one Fetcher whose spool lives in OUT/.build (see preprocess/fetch.py)
        self.fetch = Fetcher(self.retry, spool_dir(self.out), log=self.log)

    def note(self, msg: str) -> None:
        """What the build is doing (not shown with --quiet); ``log`` is for what the user must know."""
        if not self.opts.quiet:
            self.log(msg)

    # -- inputs and the plan ---------------------------------------------------------------------

    def resolve(self) -> tuple[list[readers.InputFile], dict]:
        """Every input file (of all parts) and a note on where they came from."""
        o = self.opts
        if not o.inputs and not o.input_list:
            from preprocess.default_corpus import default_corpus_dir, ensure_default_corpus
            corpus = default_corpus_dir(self.out)
            ensure_default_corpus(corpus)  # written once, then reused while its checksums hold
            self.note(f"no --input given: building on the built-in default corpus (Python's documentation) "
                      f"in {corpus}")
            return readers.resolve_inputs([str(corpus)]), {"source": "default corpus"}
        # "cannot be opened" is exactly these: the input does not resolve, or its first files do not open;
        # anything else is a bug and must not quietly turn into a build of the fallback
        cannot_open = (InputError, BadInputFile, DownloadFailed)
        try:
            inputs = readers.resolve_inputs(list(o.inputs), o.input_list, note=self.log)
            if o.fallback_input:
                self._probe(inputs)
            return inputs, {"source": "input"}
        except cannot_open as e:
            if not o.fallback_input:
                raise BuildError(f"cannot read the input: {e}") from None
            self.log(f"the input cannot be opened ({e}); using --fallback-input {o.fallback_input}")
            try:
                inputs = readers.resolve_inputs([o.fallback_input], note=self.log)
                readers.probe(inputs[0], o.text_field, self.retry)
            except cannot_open as e2:
                raise BuildError(f"neither the input ({e}) nor --fallback-input {o.fallback_input} ({e2}) "
                                 f"can be read") from None
            return inputs, {"source": "fallback", "fallback_input": o.fallback_input, "primary_error": str(e)}

    def _probe(self, inputs, tries: int = 3) -> None:
        """Is the input there at all (for --fallback-input)? One of its first ``tries`` files must open: a
        bad file among good ones is the main pass's business (--skip-bad-files), not a reason to build
        from the fallback."""
        for inp in inputs[:tries]:
            try:
                readers.probe(inp, self.opts.text_field, self.retry)
                return
            except (BadInputFile, DownloadFailed) as e:
                error = e
        raise error

    def make_plan(self, inputs: list[readers.InputFile]) -> tuple[plans.Plan, list[readers.InputFile]]:
        """The plan's fixed part for these inputs (URLs sized by HEAD), and the inputs with their sizes."""
        o = self.opts
        sampled = o.max_tokens is not None and not o.in_order
        t0 = time.perf_counter()
        try:
            sized, bad = plans.with_sizes(inputs, required=sampled, skip_bad=o.skip_bad_files, log=self.log,
                                          retry=self.retry)
        except (BadInputFile, DownloadFailed) as e:
            raise BuildError(f"cannot plan the build: {e}") from None
        if any(readers.is_url(x.path) for x in inputs):
            self.note(f"sized {sum(readers.is_url(x.path) for x in inputs):,} URLs with HEAD requests in "
                      f"{time.perf_counter() - t0:.1f} s")
        plan = plans.Plan.make(sized, max_tokens=o.max_tokens, in_order=o.in_order, mix=plans.parse_mix(o.mix),
                               source_pattern=o.source_pattern, seed=o.seed,
                               sample_bytes=o.tokenizer_sample_bytes, bad=bad)
        return plan, sized

    def show_plan(self) -> None:
        """``--plan``: print the per-source table and stop, having fetched nothing but headers (a plan
        already measured by a build in OUT is shown with its measurements)."""
        inputs, _ = self.resolve()
        plan, _ = self.make_plan(inputs)
        saved = plans.load(self.out) if (self.out / plans.PLAN_NAME).exists() else None
        if saved is not None and saved.fixed() == plan.fixed():
            plan = saved
        print(plans.describe(plan, parse_part(self.opts.part) if self.opts.part else None,
                             sample=self.opts.tokenizer is None))

    def reads(self, plan: plans.Plan) -> list[list]:
        """This build's reads: the plan's, or its ``--part``'s share (for a plain build, as before the
        plan: every N-th input file from the I-th)."""
        o = self.opts
        if o.part is None:
            reads = plan.part_reads(None)
        elif plan.sampled:
            reads = plan.part_reads(parse_part(o.part))
        else:
            reads = select_part(plan.part_reads(None), o.part)
        if not reads and not plan.reads:
            raise BuildError(f"the plan reads nothing: --max-tokens {o.max_tokens:,} gives no source a quota of even "
                             f"one document ({len(plan.sources)} sources share it); give a larger --max-tokens"
                             if o.max_tokens is not None else "the plan reads nothing: every input was left out")
        if not reads:
            raise BuildError(f"--part {o.part} selects none of the plan's {len(plan.reads)} reads; use fewer "
                             f"parts than files to read")
        return reads

    # -- tokenizer -------------------------------------------------------------------------------

    def prepare_tokenizer(self, plan: plans.Plan, inputs, given_sha: str | None) -> tk.TokenizerFile:
        """Train (or copy, or reuse after an interruption) OUT/tokenizer.json and read it.

        ``given_sha``: the fingerprint an interrupted build started with, which must not change.
        """
        o, path = self.opts, self.out / shards.TOKENIZER_NAME
        if o.tokenizer is not None:
            src = Path(o.tokenizer)
            if src.resolve() != path.resolve():
                shards.atomic_write_bytes(path, src.read_bytes())
        elif not path.exists():
            t0 = time.perf_counter()
            self.note(f"training a {o.vocab_size:,}-token byte-level BPE on up to "
                      f"{o.tokenizer_sample_bytes / 1e6:,.3g} MB of text (--tokenizer-sample-bytes) drawn from "
                      f"{len(plan.sample)} sources in their shares")
            def sample() -> Iterator[str]:
                return plans.sample_texts(plan, inputs, o.text_field, o.txt_blocks,
                                          lambda t: tk.repair_surrogates(t)[0], fetch=self.fetch)
            train_tokenizer(sample, o.vocab_size, not o.quiet and sys.stderr.isatty(), path, self.fetch)
            self.note(f"tokenizer trained in {time.perf_counter() - t0:.1f} s -> {path}")
        # loaded and fingerprinted once, up front, when given: the copy has the same bytes
        loaded = self.given if o.tokenizer is not None else tk.read(path)
        if given_sha is not None and loaded.sha256 != given_sha:
            raise BuildError(f"{path} is not the tokenizer this build started with; use --overwrite to rebuild")
        return loaded

    def encoder_sample(self, plan, inputs, reads) -> list[str]:
        """The first documents of the first reads (ENCODER_SAMPLE_READS at most, each as far as the main
        pass is expected to read it), up to ENCODER_SAMPLE_BYTES of text in all, each text cut to what is
        left of that, or ENCODER_SAMPLE_DOCS documents. From the reads' starts: the same texts whenever
        it is taken (the state keeps the check's verdict from the first save on; before that, the reads'
        starts are still in the spool)."""
        o = self.opts
        first = ReadPath(plan, inputs, reads, (0, 0), None, 0, 0, o.text_field, o.txt_blocks, False, self.fetch)
        texts = first.first_texts(ENCODER_SAMPLE_READS)
        sample, size = [], 0
        try:
            for text in texts:
                sample.append(_cut_utf8(tk.repair_surrogates(text)[0], ENCODER_SAMPLE_BYTES - size))
                size += len(sample[-1].encode("utf-8"))
                if size >= ENCODER_SAMPLE_BYTES or len(sample) >= ENCODER_SAMPLE_DOCS:
                    break
        finally:
            texts.close()
        return sample

    def start_encoder(self, loaded: tk.TokenizerFile, plan, inputs, reads,
                      state: BuildState) -> tuple[tk.Encoder, EncoderCheck | None]:
        """The encoder to start with and, for the fast engine, its equivalence check running in a thread.

        The check (HF's ids on a sample, about 0.1 s) overlaps the first batches; the main pass waits for
        it before it takes the first batch's ids, so nothing is written with an engine that failed it. Its
        verdict is kept in the state: a resumed build goes on with the engine (and records the reason) the
        build started with, as it goes on with its tokenizer.
        """
        saved = state.encoder
        if saved is not None and saved["asked"] == self.opts.encoder:
            decided = (tk.candidate_encoder(loaded.tok, "tiktoken", loaded.spec) if saved["engine"] == "tiktoken"
                       else tk.make_encoder(loaded.tok, "hf"))
            decided.reason = saved["reason"]
            return decided, None
        candidate = tk.candidate_encoder(loaded.tok, self.opts.encoder, loaded.spec)
        if candidate.engine != "tiktoken":
            self._log_encoder(candidate)
            return candidate, None
        sample = self.encoder_sample(plan, inputs, reads)  # read here, before the main pass opens its first read
        return candidate, EncoderCheck(lambda: tk.verify_encoder(candidate, loaded.tok, sample, self.opts.encoder))

    def _log_encoder(self, enc: tk.Encoder) -> None:
        # falling back to the slower engine unasked is worth a warning; the rest is a note
        unasked_fallback = enc.engine == "hf" and self.opts.encoder != "hf"
        (self.log if unasked_fallback else self.note)(f"encoder: {enc.engine} ({enc.reason})")

    def _checked(self, encoder: tk.Encoder, check: EncoderCheck | None) -> tk.Encoder:
        """Wait for the encoder check: the encoder to go on with, or _EngineRejected."""
        if check is None:
            return encoder
        verified = check.result()
        self._log_encoder(verified)
        if verified is not encoder:
            raise _EngineRejected(verified)
        return encoder

    def measure(self, plan: plans.Plan, inputs, loaded: tk.TokenizerFile) -> None:
        """Measure every source's tokens per byte (with HF's ids) and set the plan's quotas and reads;
        then drop what the sample and the measurement fetched of files this build's main pass does not read."""
        t0 = time.perf_counter()

        hf = tk.make_encoder(loaded.tok, "hf")  # the reference ids, whichever engine the main pass uses

        def count(texts: list[str]) -> list[int]:
            return [len(ids) for ids in hf.encode_batch([tk.repair_surrogates(t)[0] for t in texts])]
        rates = plans.measure(plan, inputs, count, self.opts.text_field, self.opts.txt_blocks, fetch=self.fetch)
        missing = [s.name for s in plan.sources if s.name not in rates]
        if missing:
            raise BuildError(f"no file of source {missing[0]} could be read to measure its tokens per byte; "
                             f"check its files (e.g. {inputs[plan.sources[0].files[0]].path})")
        plan.set_rates(rates)
        self.note(f"measured {len(rates)} sources in {time.perf_counter() - t0:.1f} s\n"
                  f"{plans.describe(plan, parse_part(self.opts.part) if self.opts.part else None, sample=False)}")

    # -- the build -------------------------------------------------------------------------------

    def check_output(self, shaping: dict, given_sha: str | None) -> BuildState | None | str:
        """Decide what to do with what is already in OUT: ``"done"``, a state to resume, or None (fresh)."""
        o = self.opts
        if o.overwrite:
            clear_output(self.out, keep=o.tokenizer)
            return None
        if (self.out / shards.MANIFEST_NAME).exists():
            m = shards.load_manifest(self.out)
            diff = differences(m["options"], shaping)
            if given_sha is not None and given_sha != m["tokenizer_sha256"]:
                diff.append(f"--tokenizer {o.tokenizer} is not the tokenizer the dataset was built with")
            if diff:
                raise BuildError(f"{self.out} holds a dataset built with different options: " + "; ".join(diff)
                                 + ". Use another --out, or --overwrite to replace it")
            # same options, but are these still its inputs? (files added to an input directory, a file
            # replaced): "up to date" must not hide them
            saved = plans.load(self.out)
            now, _ = self.make_plan(self.resolve()[0])
            if saved is not None:
                changed = saved.differences(now)
            else:  # built before plans were written: its manifest's inputs are what it was built from
                then = {(plans.same_file(i["path"]), i["kind"], i["size"]) for i in m["inputs"]}
                files = {(plans.same_file(p), k, size) for p, k, size in now.inputs}
                changed = [f"{len(files - then)} new or changed, {len(then - files)} gone or changed"] \
                    if files != then else []
            if changed:
                raise BuildError(f"{self.out} was built from other input files than these ({'; '.join(changed)}). "
                                 f"Use another --out, or --overwrite to rebuild it")
            return "done"
        state = load_state(self.out)
        if state is not None:
            diff = differences(state.options, shaping)
            if given_sha is not None and state.tokenizer_sha256 is not None and given_sha != state.tokenizer_sha256:
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
        if o.show_plan:
            self.show_plan()
            return None
        shaping = o.shaping()
        given_sha = None
        if o.tokenizer is not None:
            self.given = tk.read(o.tokenizer)
            given_sha = self.given.sha256
            dtype = shards.choose_dtype(self.given.tok.get_vocab_size(), o.dtype)
        else:
            # refused up front, before any input is read or anything trained
            dtype = shards.choose_dtype(o.vocab_size, o.dtype)
        self._make_out()
        try:
            with shards.directory_lock(self.out, "python -m preprocess"):
                return self._run_locked(shaping, given_sha, dtype)
        except shards.DiskFull as e:
            raise BuildError(f"{e}. Free some space there and run the same command again: every finished shard "
                             f"is kept and the build resumes where it stopped") from None
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise BuildError(f"no space left on the device writing {e.filename or self.out}. Free some space there "
                             f"and run the same command again: the build resumes where it stopped") from None

    def _make_out(self) -> None:
        if self.out.exists() and not self.out.is_dir():
            raise BuildError(f"--out {self.out} is a file, not a directory; give a directory for the dataset")
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BuildError(f"--out {self.out}: cannot create it ({e.strerror}); pick a directory you can "
                             f"write to") from None
        if not os.access(self.out, os.W_OK | os.X_OK):
            raise BuildError(f"--out {self.out} is not writable by this user; pick a directory you can write to")

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
            shutil.rmtree(self.out / shards.BUILD_DIR, ignore_errors=True)  # left if killed just after the manifest
            self.log(f"{self.out} is up to date (a finished dataset built with these options); nothing to do")
            return None
        inputs, source = self.resolve()
        plan, inputs = self.make_plan(inputs)
        for line in plans.download_lines(plan.expected_download(o.tokenizer is None,
                                                                parse_part(o.part) if o.part else None)):
            self.note(line.strip())  # before any body is fetched
        state = found or BuildState.fresh(shaping, len(inputs))
        if found is not None:
            plan = self._resume_plan(plan, state)
            state.options = shaping  # may differ from the saved ones in resume-neutral options only
            remove_unlisted_shards(self.out, state)
        save_state(self.out, state)  # before anything else is written, so OUT is known to be ours
        plans.save(self.out, plan)
        loaded = self.prepare_tokenizer(plan, inputs, state.tokenizer_sha256)
        if state.tokenizer_sha256 is None:
            state.tokenizer_sha256 = loaded.sha256
            save_state(self.out, state)
        if plan.reads is None:  # a sampled plan: its quotas wait for each source's tokens per byte
            self.measure(plan, inputs, loaded)
            plans.save(self.out, plan)
        reads = self.reads(plan)
        self.fetch.release_all_but({inputs[i].path for i, _ in reads})  # fetched for the sample only
        encoder, check = self.start_encoder(loaded, plan, inputs, reads, state)
        if found is not None:
            k = state.position[0]
            self.log(f"resuming the build in {self.out}: {len(state.shards)} shards done, read "
                     f"{min(k + 1, len(reads))} of {len(reads)}")
        try:
            return self.encode_all(plan, inputs, reads, source, state, loaded.tok, encoder, dtype, check)
        except _EngineRejected as e:  # nothing was written with the fast engine: start over with HF
            return self.encode_all(plan, inputs, reads, source, state, loaded.tok, e.encoder, dtype)

    def _resume_plan(self, now: plans.Plan, state: BuildState) -> plans.Plan:
        """The saved plan of the unfinished build, which ``now`` (computed from the inputs as they are)
        must match; the one input the build stopped on as bad may have been replaced (re-downloaded):
        the build goes on inside it from its last verified point."""
        saved = plans.load(self.out)
        if saved is None:  # killed before the plan was saved: nothing was read yet
            return now
        if saved.fixed() == now.fixed():
            return saved
        reads = saved.reads if saved.reads is not None else now.reads
        k = state.position[0]
        i = reads[k][0] if reads is not None and k < len(reads) else None
        changed = [j for j, (a, b) in enumerate(zip(saved.inputs, now.inputs, strict=False)) if a != b]
        replaced = (i is not None and changed == [i] and len(saved.inputs) == len(now.inputs)
                    and saved.inputs[i][:2] == now.inputs[i][:2]
                    and str(state.input_stats[i]["status"]).startswith("bad: ")
                    and {k2: v for k2, v in saved.fixed().items() if k2 != "inputs"}
                    == {k2: v for k2, v in now.fixed().items() if k2 != "inputs"})
        if not replaced:
            raise BuildError(f"the plan of the unfinished build in {self.out} differs from these inputs and options: "
                             + "; ".join(saved.differences(now)) + ". Restore the inputs, or use --overwrite to "
                             "start over")
        self.log(f"{now.inputs[i][0]} has changed since it failed; going on inside it after the "
                 f"{state.input_stats[i]['records']:,} records read before its last verified point (the plan keeps "
                 f"the sizes it was made with)")
        saved.inputs[i] = now.inputs[i]
        state.input_stats[i]["status"] = "reading"
        return saved

    # -- the main pass ---------------------------------------------------------------------------

    def encode_all(self, plan, inputs, reads, source, state: BuildState, tok, encoder, dtype,
                   check: EncoderCheck | None = None) -> dict:
        o, t0 = self.opts, time.perf_counter()
        eot = tk.eot_id(tok)
        writers = {s: shards.ShardWriter(self.out, s, dtype, eot, o.shard_tokens, state.next_index[s])
                   for s in shards.SPLITS}
        for split, (toks, offs) in state.load_pending(self.out).items():
            writers[split].restore(toks, offs)
        expected = plan.expected_reads()  # input -> bytes expected to be read (sampled and --in-order builds)
        progress = Progress([inputs[i] for i, _ in reads], state, disable=o.quiet,
                            expected=[expected.get(i) for i, _ in reads])
        start = state.position
        current = state.input_stats[reads[start[0]][0]]["tokens"] if start[0] < len(reads) else 0
        read_path = ReadPath(plan, inputs, reads, start, state.resume, kept=current, total=state.total_tokens(),
                             text_field=o.text_field, txt_blocks=o.txt_blocks, verify_cut_files=o.verify_cut_files,
                             fetch=self.fetch, on_bytes=progress.read_bytes, stopped=state.stopped)
        sampled = plan.sample_inputs() if o.tokenizer is None else set()
        books = MainPass(self.out, plan, inputs, reads, state, writers, progress, self.log, o.skip_bad_files, sampled)
        released = 0  # reads before this one have had their spools deleted
        try:
            batches = read_path.batches()
            settings = Settings(encoder, o.val_fraction, shards.numpy_dtype(dtype), eot, o.text_field)
            if check is None:
                state.encoder = _verdict(o.encoder, encoder)
            for piece in read_path.pieces(encode_in_order(batches, settings, o.workers)):
                if check is not None:  # before the first piece changes anything
                    encoder, check = self._checked(encoder, check), None
                    state.encoder = _verdict(o.encoder, encoder)
                if books.take(piece):
                    break
                for k in range(released, books.saved_through):  # what the state on disk is past
                    self.fetch.release(inputs[reads[k][0]].path)
                released = max(released, books.saved_through)
        finally:
            progress.close()
        if check is not None:  # no batch was taken (a resumed build already at --max-tokens)
            try:
                encoder = self._checked(encoder, check)
            except _EngineRejected as e:
                encoder = e.encoder
        for s in shards.SPLITS:
            entry = writers[s].flush()
            if entry:
                state.shards.append(entry)
        self._final_statuses(plan, reads, state)
        if not state.total_documents():
            raise BuildError(self._why_empty(state))
        manifest = self.manifest(plan, inputs, reads, source, state, tok, encoder, dtype, eot)
        shards.write_manifest(self.out, manifest)
        shutil.rmtree(self.out / shards.BUILD_DIR, ignore_errors=True)
        if not o.quiet:
            print_summary(self.out, manifest, time.perf_counter() - t0, progress.tokens - progress.start_tokens,
                          books.text_bytes, time.perf_counter() - self.t_start, downloaded=self.fetch.downloaded)
        return manifest

    def _final_statuses(self, plan, reads, state: BuildState) -> None:
        in_reads = {i for i, _ in reads}
        for i, stats in enumerate(state.input_stats):
            if i in plan.bad:
                stats["status"] = f"bad: {plan.bad[i]}"
            elif i not in in_reads:
                stats["status"] = ("not planned: its source's quota is met by its other files" if plan.sampled
                                   else "not read: another part")
            elif stats["status"] == "pending":
                stats["status"] = "not read: --max-tokens reached"
            elif stats["status"] == "reading":
                stats["status"] = "partly read: --max-tokens reached"

    def _why_empty(self, state: BuildState) -> str:
        o = self.opts
        bad = [s["status"] for s in state.input_stats if str(s["status"]).startswith("bad: ")]
        records = sum(s["records"] for s in state.input_stats)
        why = f"no document was kept: {records:,} records read"
        if state.skipped:
            why += ", all skipped (" + ", ".join(f"{k} {v:,}" for k, v in sorted(state.skipped.items())) + ")"
            if "missing_text" in state.skipped or "non_string_text" in state.skipped:
                why += f"; is the text in another field than {o.text_field!r}? Pass --text-field NAME"
        if bad:
            why += f"; {len(bad)} input files were bad, e.g. {bad[0][5:]}"
        return why + ". Nothing was written; fix the input and run again"

    def manifest(self, plan, inputs, reads, source, state, tok, encoder, dtype, eot) -> dict:
        order = {s: i for i, s in enumerate(shards.SPLITS)}
        entries = sorted(state.shards, key=lambda e: (order[e["split"]], e["file"]))
        listed = sorted({i for i, _ in reads} | set(plan.bad)) if self.opts.part else range(len(inputs))
        owner = plan.source_of_input()
        return {
            "format_version": shards.FORMAT_VERSION,
            "dtype": dtype,
            "vocab_size": tok.get_vocab_size(),
            "eot_id": eot,
            "tokenizer_sha256": state.tokenizer_sha256,
            "shards": entries,
            "totals": state.totals,
            # a file read to its end records the bytes it had, which a server's HEAD may have misstated
            "inputs": [{"path": inputs[i].path, "kind": inputs[i].kind,
                        "size": state.input_stats[i]["read_bytes"] if state.input_stats[i].get("status") == "ok"
                        and state.input_stats[i].get("read_bytes") else inputs[i].size,
                        "source": owner.get(i), **state.input_stats[i]} for i in listed],
            "skipped": dict(sorted(state.skipped.items())),
            "options": state.options,
            "plan": {"file": plans.PLAN_NAME, "sha256": plan.sha256(), "mode": plan.mode, "seed": plan.seed,
                     "max_tokens": plan.max_tokens, "part": self.opts.part},
            "sources": source_rows(plan, {i for i, _ in reads}, state.input_stats, state.total_tokens()),
            "record_sources": {k: {"documents": v[0], "tokens": v[1]} for k, v in sorted(state.record_sources.items())},
            "source": source,
            "encoder": {"engine": encoder.engine, "reason": encoder.reason},
            "split": {"method": "sha256(id, else text)[:8] as a fraction of 2**64 < val_fraction",
                      "val_fraction": self.opts.val_fraction},
            "separator": "one eot_id before every document; .idx holds each separator's offset",
            "repaired": {"lone_surrogates": state.repaired},
            "stopped_at_max_tokens": state.stopped,
            "unverified_cut_files": [inputs[i].path for i in listed if state.input_stats[i].get("checksum") == "cut"],
            "download": self._download_record(plan, inputs, listed, state),
        }

    def _download_record(self, plan, inputs, listed, state) -> dict:
        """What the manifest says of the URLs' bytes: what the plan expected this build to download
        (by the measured rates; the tokenizer sample's part when this build trained its tokenizer) and
        the bytes on disk it read of them. Both are the same in every run of the same build; what a run
        downloaded (retries and read-ahead included, so it varies) is in the summary it prints."""
        d = plan.expected_download(self.opts.tokenizer is None, parse_part(self.opts.part) if self.opts.part else None)
        return {"expected_bytes": d["kept"] + d["overhead"], "expected_kept_bytes": d["kept"],
                "read_bytes": sum(state.input_stats[i].get("read_bytes", 0) for i in listed
                                  if readers.is_url(inputs[i].path)),
                "verify_cut_files_bytes": d["verify_cut_files"]}

    def tokenizer_only(self) -> None:
        path = self.out / shards.TOKENIZER_NAME
        if path.exists() and not self.opts.overwrite:
            raise BuildError(f"{path} exists; use --overwrite to train a new one")
        if path.exists():
            path.unlink()
        inputs, _ = self.resolve()
        plan, inputs = self.make_plan(inputs)  # one tokenizer for all parts: the sample of the whole plan
        self.prepare_tokenizer(plan, inputs, None)
        # what the sample fetched is not read again here (each part fetches its own reads)
        shutil.rmtree(spool_dir(self.out), ignore_errors=True)
        if (self.out / shards.BUILD_DIR).is_dir() and not any((self.out / shards.BUILD_DIR).iterdir()):
            (self.out / shards.BUILD_DIR).rmdir()
        self.note(f"wrote {path}; build each part with --tokenizer {path}")


def _verdict(asked: str, encoder: tk.Encoder) -> dict:
    """The encoder a build goes on with, as its state keeps it."""
    return {"asked": asked, "engine": encoder.engine, "reason": encoder.reason}


def _cut_utf8(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8, at a character boundary."""
    if len(text) * 4 <= limit:
        return text
    return text[:limit].encode("utf-8")[:limit].decode("utf-8", "ignore")


def train_tokenizer(sample, vocab_size: int, show_progress: bool, path: Path, fetch: Fetcher) -> None:
    """Train a byte-level BPE on ``sample()`` and save it to ``path``, in a child process, so that Ctrl-C
    stops the build at once: the trainer works in native code, where an interrupt only takes effect
    when it is done, which on the default 1 GB sample is many minutes. On Ctrl-C the child is killed
    and nothing is saved: the rerun trains again, its sample read from the spool, not fetched again.
    An error of the child (a URL that does not answer) is raised here as the build's own. Where fork
    is not available, the training runs here and an interrupt waits for it."""
    import multiprocessing
    import signal

    if "fork" not in multiprocessing.get_all_start_methods():
        tk.save(tk.train_bpe(sample(), vocab_size=vocab_size, show_progress=show_progress), path)
        return
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)

    def child() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the build's process handles Ctrl-C, by killing this one
        before = fetch.downloaded
        try:
            tk.save(tk.train_bpe(sample(), vocab_size=vocab_size, show_progress=show_progress), path)
            send.send((None, fetch.downloaded - before))
        except (shards.PipelineError, tk.TokenizerError) as e:  # what the user can act on, said as it is
            send.send((str(e), fetch.downloaded - before))
        except BaseException as e:  # a bug: its type and message, for the traceback raised below
            send.send((RuntimeError(f"{type(e).__name__}: {e}"), fetch.downloaded - before))

    proc = context.Process(target=child, name="tokenizer-training", daemon=True)
    proc.start()
    send.close()
    try:
        while not receive.poll(0.2):
            if not proc.is_alive():
                raise BuildError(f"training the tokenizer stopped: its process ended with code {proc.exitcode} "
                                 f"(out of memory? A smaller --tokenizer-sample-bytes needs less)")
        error, downloaded = receive.recv()
    except KeyboardInterrupt:
        proc.kill()
        proc.join()
        raise
    proc.join()
    fetch.downloaded += downloaded
    if isinstance(error, RuntimeError):
        raise error
    if error is not None:
        raise BuildError(error)


def build(opts: BuildOptions) -> dict | None:
    """Run a build; returns the manifest, or None when OUT was already up to date (or with --plan)."""
    try:
        return Builder(opts).run()
    except tk.TokenizerError as e:  # the tokenizer package's own error, as the build's
        raise BuildError(str(e)) from None
