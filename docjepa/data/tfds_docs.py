"""A TFDS builder of documents (page PNGs + OCR JSON), written as array_record.

The features are Text and string Tensors only (no tfds.features.Image, which needs
TensorFlow to decode), so the dataset is built and read without TensorFlow installed:

    builder = DocjepaDocs(data_dir=D, source="synth:100")   # or a directory of PDFs/images
    builder.download_and_prepare(file_format="array_record")
    ds = tfds.data_source("docjepa_docs", split="train", data_dir=D)   # random access, grain-ready

`python -m docjepa.prepare --source tfds:docjepa_docs@D` turns it into training records.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import tensorflow_datasets as tfds

from docjepa.data import prepare


class DocjepaDocs(tfds.core.GeneratorBasedBuilder):
    """One example per readable document of `source`; unreadable ones are left out."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Page PNGs, OCR JSON (docjepa.data.ocr schema), category."}
    # No download checksums to find next to this file; TFDS's lookup of it also needs the
    # `importlib_resources` backport, which tfds 4.9 does not declare as a dependency.
    code_path = None

    def __init__(self, *, source: str = "synth:16", seed: int = 0, dpi: float = 100, max_pages: int = 32,
                 max_pixels: int = 40_000_000, ocr_lang: str = "eng", synth_long: float = 0.0,
                 synth_long_pages: tuple[int, int] = (8, 64), **kwargs: Any):
        self._source_spec, self._seed = source, seed
        self._read_cfg = {"dpi": dpi, "max_pages": max_pages, "max_pixels": max_pixels, "ocr_lang": ocr_lang,
                          "synth_long": synth_long, "synth_long_pages": synth_long_pages}
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "doc_id": tfds.features.Text(),
                "category": tfds.features.Text(),
                "pages_png": tfds.features.Tensor(shape=(None,), dtype=np.object_),
                "ocr_json": tfds.features.Text(),
            }),
            description="Document pages as PNG bytes with their words, boxes and layout.",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        del dl_manager  # sources are local
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        source = prepare.make_source(self._source_spec, self._seed)
        for item in source.items():
            try:
                doc, pages = source.read(item, self._read_cfg)
            except Exception:  # an unreadable document is simply not an example
                continue
            pngs = [cv2.imencode(".png", cv2.cvtColor(p, cv2.COLOR_RGB2BGR))[1].tobytes() for p in pages]
            yield item.doc_id, {
                "doc_id": item.doc_id, "category": doc.category or "",
                "pages_png": np.asarray(pngs, dtype=object), "ocr_json": doc.to_json(),
            }
