"""File formats the package reads, by kind of input; light to import (no numpy, torch or SimpleITK).

The CLI and both modality packages use these to tell a CT volume from a chest X-ray image
before anything heavy is imported.
"""

VOLUME_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
"""CT volume file suffixes the CT reader accepts (besides a DICOM series folder)."""
