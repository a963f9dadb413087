"""CT lung segmentation: reading, the slice-wise model, 3-D post-processing, quantification."""

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
"""CT volume file suffixes the reader accepts (besides a DICOM series folder); light to import."""
