"""The image placeholder splice and its labels."""
import pytest
import torch

from multimodal.splice import IGNORE_INDEX, IMAGE_PLACEHOLDER_ID as PH, expand_image_placeholder, labels_for, splice_image_embeddings


def test_expand_places_k_placeholders_where_the_marker_was():
    assert expand_image_placeholder([1, PH, 7, 8], 3) == [1, PH, PH, PH, 7, 8]
    with pytest.raises(ValueError):
        expand_image_placeholder([1, 7], 3)
    with pytest.raises(ValueError):
        expand_image_placeholder([PH, PH], 3)


def test_splice_writes_image_rows_at_placeholders_and_text_embeddings_elsewhere():
    embedding = torch.nn.Embedding(10, 4)
    ids = torch.tensor([[1, PH, PH, 5, 0], [PH, PH, 2, 3, 4]])
    images = torch.arange(2 * 2 * 4, dtype=torch.float32).reshape(2, 2, 4)  # (B, K, D)
    out = splice_image_embeddings(embedding, ids, images)
    assert torch.equal(out[0, 1:3], images[0]) and torch.equal(out[1, 0:2], images[1])
    assert torch.equal(out[0, 0], embedding.weight[1]) and torch.equal(out[0, 3], embedding.weight[5])
    assert torch.equal(out[1, 4], embedding.weight[4])


def test_splice_refuses_a_row_with_the_wrong_number_of_placeholders():
    with pytest.raises(ValueError):
        splice_image_embeddings(torch.nn.Embedding(10, 4), torch.tensor([[1, PH, 3]]), torch.zeros(1, 2, 4))


def test_labels_cover_targets_only():
    ids = torch.tensor([[1, PH, PH, 4, 5, 6, 0], [1, PH, PH, 4, 7, 0, 0]])
    mask = (torch.arange(7)[None] < torch.tensor([[6], [5]])).long()
    labels = labels_for(ids, torch.tensor([4, 4]), mask)
    assert labels.tolist() == [[IGNORE_INDEX] * 4 + [5, 6, IGNORE_INDEX], [IGNORE_INDEX] * 4 + [7, IGNORE_INDEX, IGNORE_INDEX]]
