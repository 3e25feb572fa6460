"""Scores the voice-quality benchmark's recordings (benches/quality/run.mjs writes them).

    score.py reference OUT.wav     # the speech file: espeak-ng sentences, 48 kHz mono, pauses
    score.py score RUN_DIR         # every case of RUN_DIR/run.json -> scores.json, results.*

Per case: the listener's recording (48 kHz, from the end of the warm-up) is aligned with the
sent speech in 0.25 s blocks (cross-correlation; the lag is the mouth-to-ear delay, device I/O
aside; blocks overlap-added), then scored: wide-band PESQ (ITU-T P.862.2, `pesq`, which aligns
utterances itself: it gets the recording shifted by the window's lag only), STOI (`pystoi`, on
the block-aligned signal), and two no-reference scores from `speechmos` (PLCMOS v2 and DNSMOS
P.835, ONNX models shipped in the wheel: nothing is downloaded) on the block-aligned signal. The listener's getStats() deltas over the measured window come
from meta.json.
"""

import json
import math
import os
import subprocess
import sys
import tempfile
import wave

import numpy as np
from scipy.signal import resample_poly

RATE = 48000

# Our own sentences (no third-party text), two espeak-ng voices.
SENTENCES = [
    ("en-us", "The morning train was late again, so we walked along the river instead."),
    ("en-us+f3", "Please put the blue folder on the second shelf, next to the old radio."),
    ("en-us", "Seven small boats drifted slowly past the harbour lights at midnight."),
    ("en-us+f3", "She asked whether the meeting could move to Thursday afternoon."),
    ("en-us", "A cup of hot tea tastes better after a long day in the cold wind."),
    ("en-us+f3", "Turn left at the bakery, then follow the signs to the station."),
    ("en-us", "Every voice in the choir should be heard clearly, even on a poor line."),
]
PAUSE_S = 0.8
LEAD_S = 0.3


def read_wav(path):
    with wave.open(path) as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: want 16-bit mono")
        rate = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64) / 32768.0
    return x, rate


def write_wav(path, x, rate=RATE):
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2")
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def make_reference(out):
    """The speech file: each sentence spoken by espeak-ng, resampled to 48 kHz, with pauses."""
    parts = [np.zeros(int(LEAD_S * RATE))]
    with tempfile.TemporaryDirectory() as tmp:
        for i, (voice, text) in enumerate(SENTENCES):
            f = os.path.join(tmp, f"{i}.wav")
            subprocess.run(["espeak-ng", "-v", voice, "-s", "170", "-w", f, text], check=True)
            x, rate = read_wav(f)
            g = math.gcd(RATE, rate)
            y = resample_poly(x, RATE // g, rate // g)
            # espeak's own leading/trailing silence off, so our pauses are the pauses.
            active = np.flatnonzero(np.abs(y) > 1e-3)
            y = y[active[0] : active[-1] + 1]
            parts += [y, np.zeros(int(PAUSE_S * RATE))]
    x = np.concatenate(parts)
    x *= 0.5 / np.max(np.abs(x))
    write_wav(out, x)
    print(f"{out}: {len(x) / RATE:.1f} s, {len(SENTENCES)} sentences")


def sentences(ref, min_pause_s=0.25):
    """[(a, b)] sample ranges of speech in `ref`, split at pauses of at least `min_pause_s`."""
    hop = RATE // 100
    n = len(ref) // hop
    rms = np.sqrt(np.mean(ref[: n * hop].reshape(n, hop) ** 2, axis=1))
    active = rms > np.max(rms) * 10 ** (-40 / 20)
    out = []
    start = None
    quiet = 0
    for i, a in enumerate(active):
        if a:
            if start is None:
                start = i
            quiet = 0
        elif start is not None:
            quiet += 1
            if quiet * hop >= min_pause_s * RATE:
                out.append((start * hop, (i - quiet + 1) * hop))
                start = None
    if start is not None:
        out.append((start * hop, n * hop))
    return [(a, b) for a, b in out if b - a >= 0.2 * RATE]


def xcorr_lag(ref, rec, lo, hi):
    """The lag in [lo, hi] maximising sum(rec[k + lag] * ref[k]), and the normalised peak."""
    seg = rec[lo : hi + len(ref)]
    if len(seg) < len(ref):
        return None, 0.0
    nfft = 1 << int(np.ceil(np.log2(len(seg) + len(ref))))
    c = np.fft.irfft(np.fft.rfft(seg, nfft) * np.conj(np.fft.rfft(ref, nfft)), nfft)[: hi - lo + 1]
    k = int(np.argmax(c))
    energy = np.sqrt(np.sum(ref**2) * np.sum(seg[k : k + len(ref)] ** 2)) or 1.0
    return lo + k, float(c[k] / energy)


BLOCK_S = 0.25  # hop of the alignment track; windows are twice as long (Hann, 50 % overlap)
SEARCH_S = 0.3  # how far a block's lag may be from the whole window's


def align(ref, rec, max_lag):
    """The received signal aligned to `ref` block by block (the jitter buffer stretches and
    shrinks time within a sentence, more so with NACK), and the lags (samples) of the blocks
    whose correlation is clear (speech in `ref`, normalised peak >= 0.3), as (start, lag, peak).
    Each 0.5 s Hann window of the received audio is taken at its block's lag and overlap-added,
    so the aligned signal has no seams."""
    hop = int(BLOCK_S * RATE)
    win = 2 * hop
    g, _ = xcorr_lag(ref, rec, 0, max_lag)
    lo = max(0, g - int(SEARCH_S * RATE))
    hi = min(max_lag, g + int(SEARCH_S * RATE))
    floor = np.sqrt(np.mean(ref**2)) * 10 ** (-20 / 20)
    starts = list(range(-hop, len(ref), hop))
    lags = []
    for a in starts:
        seg = ref[max(0, a) : a + win]
        if len(seg) < hop or np.sqrt(np.mean(seg**2)) < floor:
            lags.append(None)
            continue
        lag, peak = xcorr_lag(seg, rec[max(0, a) :], lo, hi)
        lags.append((lag, peak) if lag is not None and peak >= 0.3 else None)
    clear = [(a, l[0], l[1]) for a, l in zip(starts, lags) if l]
    # Blocks without a clear lag (pauses, concealment) take the nearest clear one's.
    filled = []
    for i in range(len(starts)):
        near = min(clear, key=lambda c: abs(c[0] - starts[i]), default=(0, g, 0))
        filled.append(lags[i][0] if lags[i] else near[1])
    w = np.hanning(win + 1)[:win]
    deg = np.zeros(len(ref) + win)
    for a, lag in zip(starts, filled):
        s0 = max(0, a)
        part = rec[s0 + lag : a + win + lag] * w[s0 - a : s0 - a + len(rec[s0 + lag : a + win + lag])]
        deg[s0 : s0 + len(part)] += part
    return g, clear, deg[: len(ref)]


def pesq_wb(ref16, deg16, segs16):
    """Wide-band PESQ per group of sentences (~10 s each, as P.862 wants), averaged."""
    from pesq import pesq

    groups = []
    cur = None
    for a, b in segs16:
        if cur is None:
            cur = [a, b]
        elif b - cur[0] > 10 * 16000:
            groups.append(cur)
            cur = [a, b]
        else:
            cur[1] = b
    if cur:
        groups.append(cur)
    scores = []
    for a, b in groups:
        a = max(0, a - 4000)
        b = min(len(ref16), b + 4000)
        try:
            scores.append(pesq(16000, ref16[a:b], deg16[a:b], "wb"))
        except Exception as e:  # noqa: BLE001 (pesq raises its own error types for silence)
            print(f"   pesq: {e}", file=sys.stderr)
    return float(np.mean(scores)) if scores else float("nan"), scores


def no_reference(x16):
    from speechmos import dnsmos, plcmos

    x16 = np.clip(x16, -1, 1).astype(np.float32)
    p = plcmos.run(x16, sr=16000)["plcmos"]
    d = dnsmos.run(x16, sr=16000)
    return float(p), float(d["ovrl_mos"]), float(d["sig_mos"]), float(d["bak_mos"])


def delta(stats, key, side="listener", kind="inbound"):
    try:
        a = stats["start"][side][kind][key]
        b = stats["end"][side][kind][key]
    except (KeyError, TypeError):
        return None
    if a is None or b is None:
        return None
    return b - a


def getstats(meta):
    s = meta["stats"]
    out = {}
    total = delta(s, "totalSamplesReceived")
    concealed = delta(s, "concealedSamples")
    out["concealed_pct"] = 100 * concealed / total if total and concealed is not None else None
    lost = delta(s, "packetsLost")
    got = delta(s, "packetsReceived")
    out["lost_pct"] = 100 * lost / (lost + got) if lost is not None and got else None
    out["fec_packets"] = delta(s, "fecPacketsReceived")
    out["nack_count"] = delta(s, "nackCount")
    jb = delta(s, "jitterBufferDelay")
    emitted = delta(s, "jitterBufferEmittedCount")
    out["jitter_buffer_ms"] = 1000 * jb / emitted if jb is not None and emitted else None
    out["packets_received"] = got
    end = s.get("end") or {}
    spk = end.get("speaker") or {}
    out["speaker_fraction_lost_pct"] = (
        100 * spk["remoteInbound"]["fractionLost"] if spk.get("remoteInbound") and spk["remoteInbound"].get("fractionLost") is not None else None
    )
    out["retransmitted_sent"] = delta(s, "retransmittedPacketsSent", "speaker", "outbound")
    lis = end.get("listener") or {}
    out["rtt_ms"] = lis.get("rttMs")
    # The speaker's send codec: its fmtp is what the encoder was told (useinbandfec, usedtx).
    codecs = [c for c in spk.get("codecs") or [] if "opus" in (c.get("mimeType") or "").lower()]
    out["speaker_fmtp"] = (codecs[0].get("sdpFmtpLine") or "") if codecs else None
    out["relay_max_late_ms"] = max((max(b["toTarget"]["maxLateMs"], b["fromTarget"]["maxLateMs"]) for b in meta.get("relay") or []), default=None)
    # Datagrams the relay sent more than 5 ms after their due time, in the measured window.
    late = [
        (b["toTarget"].get("late5ms", 0) + b["fromTarget"].get("late5ms", 0))
        for b in (meta["stats"].get("end") or {}).get("relay") or []
    ]
    late0 = [
        (b["toTarget"].get("late5ms", 0) + b["fromTarget"].get("late5ms", 0))
        for b in (meta["stats"].get("start") or {}).get("relay") or []
    ]
    out["relay_late5ms_in_window"] = sum(late) - sum(late0) if late and late0 else None
    out["relay_strays"] = sum(b.get("strays", 0) for b in meta.get("relay") or [])
    # What the relay dropped of the media (RTP) on each leg.
    for b in meta.get("relay") or []:
        media = b["toTarget"] if b["name"] == "up" else b["fromTarget"]
        if b["name"] in ("up", "down", "p2p") and media["rtp"]:
            out[f"relay_{b['name']}_loss_pct"] = 100 * media["rtpDropped"] / media["rtp"]
    return out


def score_case(run_dir, meta, ref_full):
    rec, rate = read_wav(os.path.join(run_dir, meta["dir"], "received.wav"))
    assert rate == RATE
    ref = np.roll(ref_full, -meta["rotateFrames"])[: meta["measureFrames"]]
    max_lag = len(rec) - len(ref)
    segs = sentences(ref)
    g, blocks, deg = align(ref, rec, max_lag)
    delays = np.array([lag for _, lag, _ in blocks]) * 1000 / RATE
    peaks = np.array([p for _, _, p in blocks])
    ref16 = resample_poly(ref, 1, 3)
    deg16 = resample_poly(deg, 1, 3)
    segs16 = [(a // 3, b // 3) for a, b in segs]
    # PESQ aligns utterances itself (P.862): it gets the recording at the window's lag only.
    pesq_mean, pesq_parts = pesq_wb(ref16, resample_poly(rec[g : g + len(ref)], 1, 3), segs16)
    from pystoi import stoi

    out = {
        "case": meta["name"],
        "system": meta["systemName"] + ("→firefox" if meta["listener"] == "firefox" else ""),
        "net": meta["net"],
        "net_label": meta["netLabel"],
        "listener": meta["listener"],
        "pesq_wb": pesq_mean,
        "pesq_parts": pesq_parts,
        "stoi": float(stoi(ref16, deg16, 16000, extended=False)),
        "delay_median_ms": float(np.median(delays)),
        "delay_p95_ms": float(np.percentile(delays, 95)),
        "delay_exact": bool(meta["sameClock"]),
        "aligned_blocks": len(blocks),
        "xcorr_median": float(np.median(peaks)),
        "received_rms_db": float(20 * np.log10(np.sqrt(np.mean(deg**2)) + 1e-12)),
    }
    out["plcmos"], out["dnsmos_ovrl"], out["dnsmos_sig"], out["dnsmos_bak"] = no_reference(deg16)
    out.update(getstats(meta))
    write_wav(os.path.join(run_dir, meta["dir"], "aligned.wav"), deg)
    return out


def score(run_dir):
    with open(os.path.join(run_dir, "run.json")) as f:
        run = json.load(f)
    ref_full, rate = read_wav(os.path.join(run_dir, "speech.wav"))
    assert rate == RATE
    ref16 = resample_poly(ref_full, 1, 3)
    p, o, s, b = no_reference(ref16)
    baseline = {"plcmos": p, "dnsmos_ovrl": o, "dnsmos_sig": s, "dnsmos_bak": b}
    rows = []
    for c in run["cases"]:
        if not c.get("dir"):
            rows.append({"case": c["name"], "error": c.get("error")})
            continue
        with open(os.path.join(run_dir, c["dir"], "meta.json")) as f:
            meta = json.load(f)
        r = score_case(run_dir, meta, ref_full)
        rows.append(r)
        print(
            f"{r['case']:28} PESQ {r['pesq_wb']:.2f}  STOI {r['stoi']:.3f}  PLCMOS {r['plcmos']:.2f}  "
            f"DNSMOS {r['dnsmos_ovrl']:.2f}  delay {r['delay_median_ms']:.0f}/{r['delay_p95_ms']:.0f} ms  "
            f"concealed {fmt(r.get('concealed_pct'))} %  FEC {r.get('fec_packets')}  NACK {r.get('nack_count')}"
        )
    with open(os.path.join(run_dir, "scores.json"), "w") as f:
        json.dump({"run": run, "reference": baseline, "rows": rows}, f, indent=2)
    import report

    report.write(run_dir, run, baseline, rows)


def fmt(x, d=1):
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{d}f}"


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    if len(sys.argv) == 3 and sys.argv[1] == "reference":
        make_reference(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "score":
        score(sys.argv[2])
    else:
        print(__doc__)
        sys.exit(2)
