"""Support code for the viewer browser tests: synthetic DICOM, masks and a static server.

The server is a plain ``http.server`` on 127.0.0.1 that serves ``frontend/dist`` under
``/static/viewer/`` (the Vite ``base``), DICOM instances under ``/dicom/`` and masks under
``/mask/`` (raw uint8 with ``X-Shape``/``X-Dtype``, gzip ``Content-Encoding``), so the
built bundle is exercised the way Django will serve it.
"""

from __future__ import annotations

import gzip
import io
import mimetypes
import os
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import numpy as np
from csp.utils import build_policy

from workbench.assets import viewer_assets  # the same manifest lookup the Django page uses

REPO_ROOT = Path(__file__).resolve().parents[2]
DIST = REPO_ROOT / "frontend" / "dist"
ARTIFACTS = REPO_ROOT / "test-artifacts" / "e2e"
CHROMIUM = Path(os.environ.get("PLEURA_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1280, "height": 800}

XRAY_SIZE = 256
CT_SLICES, CT_SIZE = 5, 128

# ---------------------------------------------------------------- synthetic images


def _ellipse(shape: tuple[int, int], cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    """Boolean (H, W) mask of an axis-aligned ellipse."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def xray_pixels() -> np.ndarray:
    """(256, 256) uint8 chest-like radiograph: bright body, two dark lung fields, a spine."""
    shape = (XRAY_SIZE, XRAY_SIZE)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.full(shape, 30.0)
    img[_ellipse(shape, 128, 128, 120, 110)] = 190.0
    img[xray_lung_labels() > 0] = 70.0
    img[(np.abs(xx - 128) < 10) & (yy > 30)] = 230.0
    img += 12.0 * np.sin(xx / 9.0) * np.cos(yy / 13.0)
    return np.clip(img, 0, 255).astype(np.uint8)


def xray_lung_labels() -> np.ndarray:
    """(256, 256) uint8 labels: 1 = patient's right lung (image left), 2 = patient's left lung."""
    shape = (XRAY_SIZE, XRAY_SIZE)
    labels = np.zeros(shape, np.uint8)
    labels[_ellipse(shape, 125, 80, 70, 34)] = 1
    labels[_ellipse(shape, 130, 176, 64, 32)] = 2
    return labels


def ct_hu(z: int) -> np.ndarray:
    """(128, 128) int16 HU slice z: body disk, two lungs whose size grows with z, a slice-number bar."""
    shape = (CT_SIZE, CT_SIZE)
    hu = np.full(shape, -1000, np.int16)
    hu[_ellipse(shape, 64, 64, 50, 58)] = 40
    r = 14 + 4 * z
    hu[_ellipse(shape, 64, 40, r, 12)] = -850
    hu[_ellipse(shape, 64, 88, r, 12)] = -850
    hu[4:10, 4 : 4 + 20 * (z + 1)] = 700
    return hu


def ct_lung_labels() -> np.ndarray:
    """(5, 128, 128) uint8 labels on slices 1-3 only (0 and 4 empty): 1 = image-left lung, 2 = image-right lung."""
    labels = np.zeros((CT_SLICES, CT_SIZE, CT_SIZE), np.uint8)
    for z in (1, 2, 3):
        lung = ct_hu(z) == -850
        labels[z][lung & (np.arange(CT_SIZE)[None, :] < CT_SIZE // 2)] = 1
        labels[z][lung & (np.arange(CT_SIZE)[None, :] >= CT_SIZE // 2)] = 2
    return labels


def distance_to_path(px: np.ndarray, path: list[tuple[float, float]]) -> np.ndarray:
    """Distance (pixels) of each (N, 2) (x, y) point to the polyline ``path``."""
    best = np.full(len(px), np.inf)
    for (ax, ay), (bx, by) in zip(path, path[1:]):
        a, b = np.array([ax, ay], float), np.array([bx, by], float)
        ab = b - a
        t = np.clip(((px - a) @ ab) / max(ab @ ab, 1e-9), 0, 1)
        best = np.minimum(best, np.linalg.norm(px - (a + t[:, None] * ab), axis=1))
    return best


def _dataset(sop_class: str, rows: int, cols: int, modality: str):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientName = "Synthetic^Phantom"
    ds.PatientID = "PLEURA-E2E"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelSpacing = [1.0, 1.0]
    return ds


def _to_bytes(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def xray_dicom() -> bytes:
    """Secondary Capture, MONOCHROME2, 8 bits stored."""
    ds = _dataset("1.2.840.10008.5.1.4.1.1.7", XRAY_SIZE, XRAY_SIZE, "OT")
    ds.ConversionType = "WSD"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = xray_pixels().tobytes()
    return _to_bytes(ds)


def xray_dicom_jpegls() -> bytes:
    """:func:`xray_dicom` compressed with lossless JPEG-LS: the browser decodes it with the CharLS
    WebAssembly codec, which the site's Content-Security-Policy must let compile."""
    import pydicom
    from pydicom.uid import JPEGLSLossless

    ds = pydicom.dcmread(io.BytesIO(xray_dicom()))
    ds.compress(JPEGLSLossless, encoding_plugin="pyjpegls")
    return _to_bytes(ds)


def ct_series(implicit_vr: bool = False) -> list[bytes]:
    """CT Image Storage stack, stored as unsigned values with RescaleIntercept -1024, 2.5 mm apart;
    explicit VR little endian, or implicit VR as many scanners send it."""
    from pydicom.uid import ImplicitVRLittleEndian, generate_uid

    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    out = []
    for z in range(CT_SLICES):
        ds = _dataset("1.2.840.10008.5.1.4.1.1.2", CT_SIZE, CT_SIZE, "CT")
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.InstanceNumber = z + 1
        ds.ImagePositionPatient = [-64.0, -64.0, -100.0 + 2.5 * z]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.SliceThickness = 2.5
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, -1024, "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.PixelData = (ct_hu(z).astype(np.int32) + 1024).astype(np.uint16).tobytes()
        if implicit_vr:
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        out.append(_to_bytes(ds))
    return out


# ---------------------------------------------------------------- static server


@dataclass
class Resource:
    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ViewerServer:
    base_url: str
    resources: dict[str, Resource]

    def url(self, path: str) -> str:
        return self.base_url + path


def wait_for_js(page: Any, expression: str, timeout: float = 30_000, interval_ms: float = 50) -> Any:
    """``page.wait_for_function(expression)`` for pages under the site's Content-Security-Policy.

    Playwright's in-page polling compiles the expression with ``new Function``, which a policy
    without ``'unsafe-eval'`` forbids; ``page.evaluate`` runs it through the DevTools protocol,
    outside the page's policy. ``timeout`` in ms, as Playwright's.
    """
    deadline = time.monotonic() + timeout / 1000
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} ms waiting for {expression}")
        page.wait_for_timeout(interval_ms)


def handler_for(resources: dict[str, Resource]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
            pass

        def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str]) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            path = self.path.split("?", 1)[0]
            if path in resources:
                r = resources[path]
                self._send(200, r.body, r.content_type, r.headers)
                return
            prefix = "/static/viewer/"
            if path.startswith(prefix):
                target = (DIST / path[len(prefix) :]).resolve()
                if target.is_file() and DIST.resolve() in target.parents:
                    ctype = "application/wasm" if target.suffix == ".wasm" else (
                        mimetypes.guess_type(target.name)[0] or "application/octet-stream"
                    )
                    if target.suffix in {".js", ".mjs"}:
                        ctype = "text/javascript"
                    self._send(200, target.read_bytes(), ctype, {})
                    return
            self._send(404, f"not found: {path}".encode(), "text/plain", {})

    return Handler


def mask_resource(labels: np.ndarray) -> Resource:
    """Mask response: gzip-encoded raw uint8 with its (D, H, W) shape in X-Shape."""
    vol = labels if labels.ndim == 3 else labels[None]
    return Resource(
        gzip.compress(np.ascontiguousarray(vol, np.uint8).tobytes()),
        "application/octet-stream",
        {"X-Shape": ",".join(map(str, vol.shape)), "X-Dtype": "uint8", "Content-Encoding": "gzip"},
    )


def page_like_django(manifest: dict) -> Resource:
    """An HTML page that includes the viewer entry from the manifest, as a Django template will."""
    js, css = viewer_assets(manifest)
    links = "".join(f'<link rel="stylesheet" href="/static/viewer/{c}">' for c in css)
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Pleura page</title>'
        f'<link rel="icon" href="data:,">{links}</head>'
        '<body style="margin:0"><div id="root" style="height:100vh"></div>'
        f'<script type="module" src="/static/viewer/{js}"></script></body></html>'
    )
    # served with the site's Content-Security-Policy, so the test proves the viewer runs under it
    return Resource(html.encode(), "text/html; charset=utf-8", {"Content-Security-Policy": build_policy()})

