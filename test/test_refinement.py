import logging

import pytest
import torch

from moonseg3r_ros.core.refinement import QueryDecoder, RefinementError


def test_identity_mode_is_explicit_and_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="moonseg3r"):
        decoder = QueryDecoder(dim=16, feature_dim=8, num_layers=3, num_heads=4)
    assert decoder.mode == "identity"
    assert "untrained refinement: identity" in caplog.text
    q = torch.randn(5, 16)
    out = decoder(q, torch.randn(8, 3, 4), torch.randn(2, 16))
    assert out.queries is q and out.mask_logits is None


def test_decoder_shapes_context_and_logits():
    decoder = QueryDecoder(dim=16, feature_dim=8, num_layers=3, num_heads=4, run_untrained=True).eval()
    assert decoder.mode == "untrained" and len(decoder.layers) == 3
    layer = decoder.layers[0]
    assert all(hasattr(layer, n) for n in ("frame_attn", "context_attn", "self_attn", "ffn"))
    q, f2d, ctx = torch.randn(5, 16), torch.randn(8, 3, 4), torch.randn(2, 16)
    with torch.no_grad():
        out = decoder(q, f2d, ctx)
        without = decoder(q, f2d, None)
        empty = decoder(q, f2d, torch.zeros(0, 16))
    assert out.queries.shape == (5, 16) and out.mask_logits.shape == (5, 3, 4)
    assert not torch.allclose(out.queries, without.queries)  # context changes the result
    torch.testing.assert_close(empty.queries, without.queries)
    # mask logits are q' . per-pixel embeddings
    pixels = decoder.pixel_proj(f2d.reshape(8, -1).T)
    torch.testing.assert_close(out.mask_logits, (out.queries @ pixels.T).reshape(5, 3, 4))


def test_load_weights_roundtrip_and_errors(tmp_path):
    trained = QueryDecoder(16, 8, 2, 4, run_untrained=True, seed=3)
    path = tmp_path / "decoder.pt"
    torch.save({"decoder": trained.state_dict(), "lifter": {"x": torch.zeros(1)}}, path)
    loaded = QueryDecoder(16, 8, 2, 4, weights=str(path))
    assert loaded.mode == "trained" and "lifter" in loaded.extras
    for a, b in zip(trained.state_dict().values(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b)
    plain = tmp_path / "plain.pt"
    torch.save(trained.state_dict(), plain)
    assert QueryDecoder(16, 8, 2, 4, weights=str(plain)).mode == "trained"
    with pytest.raises(RefinementError, match="do not exist"):
        QueryDecoder(16, 8, 2, 4, weights=str(tmp_path / "missing.pt"))
    with pytest.raises(RefinementError, match="do not fit"):
        QueryDecoder(32, 8, 2, 4, weights=str(path))
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(RefinementError, match="cannot be read"):
        QueryDecoder(16, 8, 2, 4, weights=str(tmp_path / "junk.pt"))
