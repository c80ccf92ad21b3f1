"""Spectral measurements shared by the pitch tests."""
import numpy as np


def peak_freq(y, samplerate=44100):
    """Frequency of the largest spectral peak, refined by a parabola through its bins."""
    y = np.asarray(y, dtype=np.float64)
    mag = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    k = int(mag[1:-1].argmax()) + 1
    a, b, c = np.log(mag[k - 1:k + 2] + 1e-12)
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * samplerate / len(y)
