"""skops archives are checked whole before any member is read: encrypted members, unread
compression methods, local headers that disagree with the central directory, duplicate, escaping
and overlapping members are each refused with a 422 that says which (picklescan's CVE-2025-1944
and CVE-2025-1945 bypasses are of this kind), and a real skops file in every compression zipfile
reads still passes."""

from __future__ import annotations

import io
import zipfile

import pytest
import skops.io
from flask.testing import FlaskClient
from sklearn.linear_model import LogisticRegression

from modelyard.registry import safety
from modelyard.registry.errors import InvalidArtifact, UnsafeArtifact
from tests.factories import X, y
from tests.registry.corpus import BROKEN_ZIPS, skops_broken


@pytest.mark.parametrize("how", sorted(BROKEN_ZIPS))
def test_a_broken_archive_is_refused_saying_why(how: str) -> None:
    with pytest.raises(InvalidArtifact) as refused:
        safety.check_skops(skops_broken(how))
    assert refused.value.message.startswith("skops archive: ")
    assert BROKEN_ZIPS[how] in refused.value.message


@pytest.mark.parametrize("how", ["schema-encrypted", "schema-strong-encryption", "unsupported-method",
                                 "overlapping-members", "duplicate-member"])
def test_a_broken_archive_upload_is_a_422(client: FlaskClient, how: str) -> None:
    response = client.post("/models/broken/versions", data={"file": (io.BytesIO(skops_broken(how)), "m.skops")},
                           content_type="multipart/form-data")
    assert response.status_code == 422, response.get_data(as_text=True)
    assert BROKEN_ZIPS[how] in response.json["message"]
    assert client.get("/models/broken").status_code == 404


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
                                         zipfile.ZIP_LZMA])
def test_skops_files_in_every_compression_zipfile_reads_load(compression: int) -> None:
    model = LogisticRegression(max_iter=300).fit(X, y)
    data = skops.io.dumps(model, compression=compression)
    assert "sklearn.linear_model._logistic.LogisticRegression" in safety.check_skops(data)
    assert (safety.load(data, "skops").predict(X[:5]) == model.predict(X[:5])).all()


def test_the_members_expansion_is_bounded() -> None:
    data = skops.io.dumps(LogisticRegression(max_iter=300).fit(X, y))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        total = sum(info.file_size for info in archive.infolist())
    assert safety.check_skops(data, max_expanded_bytes=total)
    with pytest.raises(InvalidArtifact, match=f"expand to {total} bytes, more than {total - 1}"):
        safety.check_skops(data, max_expanded_bytes=total - 1)


def test_a_schema_that_is_not_json_or_names_an_odd_loader_is_refused() -> None:
    for schema, expected in ((b"\xff\xfe", "member 'schema.json' is not JSON"),
                             (b'{"__loader__": ["ObjectNode"]}', "skops ['ObjectNode']")):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("schema.json", schema)
        with pytest.raises((InvalidArtifact, UnsafeArtifact)) as refused:
            safety.check_skops(buffer.getvalue())
        assert expected in str(refused.value)
