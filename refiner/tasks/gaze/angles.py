"""Gaze angle conventions: gaze is (pitch, yaw) in radians; (0, 0) looks straight into the
camera, pitch > 0 looks up, yaw > 0 looks towards the image's left (MPIIGaze's convention,
pitch = asin(-y), yaw = atan2(-x, -z) in its camera axes). Eyes are 35 x 55 (height x width)
grayscale, as in the SimGAN paper."""

from __future__ import annotations

import numpy as np

EYE_SIZE = (35, 55)  # height, width


def unit(vector) -> np.ndarray:
    """A gaze vector scaled to length 1; a zero or non-finite one is a ValueError (it has no
    direction: dividing would make a NaN label)."""
    vector = np.asarray(vector, np.float64)
    norm = np.linalg.norm(vector)
    if not np.isfinite(norm) or norm == 0:
        raise ValueError(f"gaze vector {vector.tolist()} has no direction")
    return vector / norm


def unityeyes_look_to_pitch_yaw(look_vec) -> tuple[float, float]:
    """UnityEyes' ``look_vec`` (x right, y up, z away from the camera) -> (pitch, yaw)."""
    x, y, z = unit(np.asarray(look_vec, np.float64)[:3])
    return float(np.arcsin(y)), float(np.arctan2(-x, -z))


def mpiigaze_vector_to_pitch_yaw(gaze) -> tuple[float, float]:
    """MPIIGaze's normalised gaze vector (camera axes: x right, y down, z forward) -> (pitch, yaw)."""
    x, y, z = unit(gaze)
    return float(np.arcsin(-y)), float(np.arctan2(-x, -z))


def pitch_yaw_to_vector(pitch_yaw: np.ndarray) -> np.ndarray:
    """(N, 2) pitch, yaw -> (N, 3) unit vectors in MPIIGaze's camera axes."""
    pitch, yaw = np.asarray(pitch_yaw, np.float64).reshape(-1, 2).T
    return np.stack([-np.cos(pitch) * np.sin(yaw), -np.sin(pitch), -np.cos(pitch) * np.cos(yaw)], axis=1)


def angular_error_deg(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Angle between predicted and true gaze directions, in degrees, per sample."""
    a, b = pitch_yaw_to_vector(predicted), pitch_yaw_to_vector(truth)
    return np.degrees(np.arccos(np.clip((a * b).sum(1), -1.0, 1.0)))
