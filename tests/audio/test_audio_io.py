"""Reading recordings: formats and bit depths, channels, resampling, NaN samples, bad files."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from nscnet.audio.io import AudioError, load_audio
from nscnet.config import DataError

SR = 16000


def tone(freq: float = 1000.0, seconds: float = 0.5, sr: int = SR, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def peak_hz(y: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(y))
    return float(np.fft.rfftfreq(len(y), 1 / sr)[spectrum.argmax()])


@pytest.mark.parametrize("subtype, tolerance", [("PCM_U8", 1e-2), ("PCM_16", 1e-4), ("PCM_24", 1e-6), ("FLOAT", 1e-7)])
def test_wav_bit_depths_read_as_float(tmp_path, subtype, tolerance):
    path = tmp_path / f"{subtype}.wav"
    y = tone()
    sf.write(path, y, SR, subtype=subtype)
    assert sf.info(str(path)).subtype == subtype
    loaded, n_nan = load_audio(path, sample_rate=SR)
    assert loaded.dtype == np.float32 and loaded.shape == y.shape and n_nan == 0
    assert np.abs(loaded - y).max() < tolerance


@pytest.mark.parametrize("suffix", ["flac", "ogg", "mp3"])
def test_compressed_formats(tmp_path, suffix):
    path = tmp_path / f"x.{suffix}"
    sf.write(path, tone(seconds=1.0), SR)
    loaded, _ = load_audio(path, sample_rate=SR)
    assert abs(len(loaded) - SR) < 0.1 * SR  # MP3 adds encoder padding
    assert peak_hz(loaded, SR) == pytest.approx(1000, abs=5)
    assert 0.2 < np.sqrt(np.mean(loaded ** 2)) < 0.5


def test_resampled_when_the_rate_differs(tmp_path):
    path = tmp_path / "x.wav"
    sf.write(path, tone(3000, seconds=1.0, sr=32000), 32000)
    loaded, _ = load_audio(path, sample_rate=22050)
    assert abs(len(loaded) - 22050) <= 1
    assert peak_hz(loaded, 22050) == pytest.approx(3000, abs=2)


def test_channel_selection_and_missing_channel_names_the_file(tmp_path):
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([tone(1000), tone(4000)], axis=1), SR)
    assert peak_hz(load_audio(path, sample_rate=SR, channel=0)[0], SR) == pytest.approx(1000, abs=3)
    assert peak_hz(load_audio(path, sample_rate=SR, channel=1)[0], SR) == pytest.approx(4000, abs=3)
    with pytest.raises(DataError, match="stereo.wav.*channel 2.*2 channel") as info:
        load_audio(path, sample_rate=SR, channel=2)
    assert info.value.reason == "channel_missing"


def test_nan_samples_become_zero(tmp_path):
    path = tmp_path / "nan.wav"
    y = tone()
    y[100:110] = np.nan
    y[200] = np.inf
    sf.write(path, y, SR, subtype="FLOAT")
    loaded, n_nan = load_audio(path, sample_rate=SR)
    assert n_nan == 11
    assert np.isfinite(loaded).all() and (loaded[100:110] == 0).all() and loaded[200] == 0


def test_nan_samples_with_resampling_stay_finite(tmp_path):
    path = tmp_path / "nan.wav"
    y = tone(seconds=0.2, sr=32000)
    y[::7] = np.nan
    sf.write(path, y, 32000, subtype="FLOAT")
    loaded, n_nan = load_audio(path, sample_rate=22050)
    assert n_nan > 0 and np.isfinite(loaded).all()


def test_truncated_wav_names_the_file(tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, tone(), SR, subtype="PCM_16")
    data = good.read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    (tmp_path / "header.wav").write_bytes(data[:30])
    with pytest.raises(AudioError, match="cut.wav.*truncated") as info:
        load_audio(tmp_path / "cut.wav", sample_rate=SR)
    assert info.value.reason == "truncated_audio"
    with pytest.raises(AudioError, match="header.wav"):
        load_audio(tmp_path / "header.wav", sample_rate=SR)


def test_non_audio_and_empty_files_name_the_file(tmp_path):
    (tmp_path / "text.wav").write_text("this is not audio\n" * 20)
    (tmp_path / "zero.wav").write_bytes(b"")
    sf.write(tmp_path / "nosamples.wav", np.zeros(0, dtype=np.float32), SR)
    with pytest.raises(AudioError, match="text.wav.*not a readable audio file") as info:
        load_audio(tmp_path / "text.wav", sample_rate=SR)
    assert info.value.reason == "unreadable_audio"
    with pytest.raises(AudioError, match="zero.wav"):
        load_audio(tmp_path / "zero.wav", sample_rate=SR)
    with pytest.raises(AudioError, match="nosamples.wav.*empty recording") as info:
        load_audio(tmp_path / "nosamples.wav", sample_rate=SR)
    assert info.value.reason == "empty_audio"
