"""A DICOMweb archive (a PACS, Orthanc, a cloud DICOM store): find a study's image series (QIDO-RS),
retrieve them into folders (WADO-RS) and store new instances (STOW-RS), with dicomweb-client.

Credentials come from a file or the environment variable :data:`CREDENTIALS_ENV`, never from the command
line (where ``ps`` and shell histories show them): ``user:password`` for HTTP basic authentication, or
``Bearer TOKEN`` for a token. They are sent only as request headers and never appear in a message, a log
line or an exception (URLs in messages are shown without any ``user:password@`` part).

Transient failures (connection refused or reset, timeouts, HTTP 429, 500, 502, 503, 504) are retried
with exponential backoff (``backoff_s``, doubled each time) up to ``retries`` times; then the error says
what failed, on which server. A study that does not exist, a series that is not an image, and a
retrieval that did not bring every instance the archive lists are errors of their own.

Searches (QIDO-RS) are read page after page (``offset``), since archives cap the results of one answer;
the instances listed must add up to the series' NumberOfSeriesRelatedInstances when the archive gives it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from attnseg.errors import ConfigError, DataError

CREDENTIALS_ENV = "ATTNSEG_DICOMWEB_CREDENTIALS"
_INSTANCE_COUNT = "00201209"  # NumberOfSeriesRelatedInstances, asked for with each series found
_TRANSIENT = (429, 500, 502, 503, 504)
# SOP classes whose instances are not image slices (structured reports, SEG and other derived objects,
# presentation states, RT objects, encapsulated documents, key object selection...).
_NOT_IMAGE_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.88.",  # structured reports, key objects
    "1.2.840.10008.5.1.4.1.1.66",  # segmentation, registration, fiducials, raw data
    "1.2.840.10008.5.1.4.1.1.11.",  # presentation states
    "1.2.840.10008.5.1.4.1.1.481.",  # RT
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated PDF, CDA
)


@dataclass(frozen=True)
class Credentials:
    """Basic (user, password) or bearer (token) credentials; their repr hides the secret."""

    user: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return "Credentials(bearer token)" if self.token else "Credentials(basic, ***)"


def load_credentials(path: str | os.PathLike | None = None) -> Credentials | None:
    """Credentials from the file ``path``, else from ``$ATTNSEG_DICOMWEB_CREDENTIALS``; None when neither."""
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ConfigError(f"{path}: cannot read the DICOMweb credentials file ({error.strerror})") from None
        source = str(path)
    else:
        text = os.environ.get(CREDENTIALS_ENV, "").strip()
        source = f"${CREDENTIALS_ENV}"
        if not text:
            return None
    if text.lower().startswith("bearer "):
        return Credentials(token=text[7:].strip())
    if ":" not in text:
        raise ConfigError(f"{source}: expected 'user:password' or 'Bearer TOKEN' (the value is not shown)")
    user, password = text.split(":", 1)
    return Credentials(user=user, password=password)


def public_url(url: str) -> str:
    """``url`` without any ``user:password@`` part: what messages may show."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class RemoteSeries:
    """An image series of a study on the archive, and the instances the archive lists for it."""

    series_uid: str
    modality: str
    description: str
    instance_uids: tuple[str, ...]


class DicomWeb:
    """One DICOMweb server (``url``: its root, e.g. ``http://pacs:8042/dicom-web``).

    Args:
        credentials: see :func:`load_credentials`.
        retries: attempts after the first on a transient failure.
        backoff_s: the first wait; each retry waits twice as long as the one before.
        timeout_s: per request (connecting, and each read).
    """

    def __init__(
        self,
        url: str,
        credentials: Credentials | None = None,
        *,
        retries: int = 4,
        backoff_s: float = 0.5,
        timeout_s: float = 60.0,
    ) -> None:
        import requests
        from dicomweb_client.api import DICOMwebClient
        from requests.adapters import HTTPAdapter
        from urllib3.util.retry import Retry

        if not re.match(r"^https?://", url):
            raise ConfigError(f"--dicomweb {public_url(url)!r}: expected an http:// or https:// URL")
        self.url = public_url(url).rstrip("/")
        session = requests.Session()
        session.trust_env = False  # no proxy or .netrc from the environment: the server named, nothing else
        if credentials is not None and credentials.token:
            session.headers["Authorization"] = f"Bearer {credentials.token}"
        elif credentials is not None:
            session.auth = (credentials.user or "", credentials.password or "")
        retry = Retry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            backoff_factor=backoff_s,
            status_forcelist=_TRANSIENT,
            allowed_methods=None,  # STOW (POST) too: storing an instance again with its UID is idempotent
            raise_on_status=False,
        )
        adapter = HTTPAdapter(max_retries=retry)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self.client = DICOMwebClient(self.url, session=session, timeout=timeout_s)
        self.client.set_http_retry_params(retry=False)  # the session's Retry does it, connection errors too

    # finding -------------------------------------------------------------------------------------
    def image_series(
        self, study_uid: str, series_uid: str | None = None, on_found: Callable[[list[str]], None] | None = None
    ) -> list[RemoteSeries]:
        """The image series of ``study_uid`` (only ``series_uid`` when given), with their instances.

        ``on_found`` is called with the UIDs of the series found, after the one search for them and before
        their instances are listed: a caller that can refuse the run from the UIDs alone (its outputs in
        the way) raises there, having cost the archive one search.

        Raises:
            DataError: the server is unreachable; the study (or the series) is not there; the series
                asked for is not an image series, or the study has none.
        """
        found = self._search_all(
            lambda offset: self.client.search_for_series(
                study_instance_uid=study_uid, fields=[_INSTANCE_COUNT], offset=offset
            ),
            "0020000E",
            "searching the study",
        )
        if not found:
            raise DataError(f"{self.url}: study {study_uid} not found (no series)")
        uids = [_value(item, "0020000E") for item in found]
        if series_uid is not None:
            if series_uid not in uids:
                raise DataError(f"{self.url}: series {series_uid} not found in study {study_uid}")
            found = [found[uids.index(series_uid)]]
        if on_found is not None:
            on_found([_value(item, "0020000E") for item in found])
        chosen, skipped = [], []
        for item in found:
            uid, modality = _value(item, "0020000E"), _value(item, "00080060")
            instances = self._search_all(
                lambda offset, uid=uid: self.client.search_for_instances(
                    study_instance_uid=study_uid, series_instance_uid=uid, offset=offset
                ),
                "00080018",
                f"listing the instances of series {uid}",
            )
            self._check_listed(uid, len(instances), _value(item, _INSTANCE_COUNT))
            classes = {_value(i, "00080016") for i in instances}
            if not instances or any(c.startswith(_NOT_IMAGE_PREFIXES) for c in classes):
                skipped.append(f"{uid} ({modality or 'no modality'})")
                continue
            chosen.append(
                RemoteSeries(uid, modality, _value(item, "0008103E"), tuple(_value(i, "00080018") for i in instances))
            )
        if not chosen and series_uid is not None:
            modality = _value(found[0], "00080060") or "no modality"
            raise DataError(f"{self.url}: series {series_uid} is not an image series ({modality}); nothing to segment")
        if not chosen:
            raise DataError(
                f"{self.url}: study {study_uid} has no image series (only {', '.join(skipped)}); nothing to segment"
            )
        return chosen

    # retrieving -----------------------------------------------------------------------------------
    def retrieve_series(self, study_uid: str, series: RemoteSeries, folder: Path) -> list[Path]:
        """Every instance of ``series`` into ``folder`` (``<SOPInstanceUID>.dcm``).

        Raises:
            DataError: the retrieval failed or brought back other instances than the archive lists
                (a partial retrieval): the folder is then incomplete and must not be used.
        """
        import requests

        folder.mkdir(parents=True, exist_ok=True)
        written = []

        def fetch() -> None:
            try:
                for dataset in self.client.iter_series(
                    study_instance_uid=study_uid, series_instance_uid=series.series_uid
                ):
                    path = folder / f"{dataset.SOPInstanceUID}.dcm"
                    dataset.save_as(path, enforce_file_format=True)
                    written.append(path)
            except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as error:
                raise _BrokenTransfer(type(error).__name__) from None  # the body ended before its promised length

        try:
            self._call(fetch, f"retrieving series {series.series_uid}")
        except DataError:
            raise
        except Exception as error:  # a body cut short (or the multipart or DICOM parser failing part-way)
            reason = str(error) if isinstance(error, _BrokenTransfer) else type(error).__name__
            raise DataError(
                f"{self.url}: partial retrieval of series {series.series_uid}: the transfer broke off after "
                f"{len(written)} of {len(series.instance_uids)} instance(s) ({reason}); "
                "nothing was predicted or stored"
            ) from None
        got = {p.stem for p in written}
        if got != set(series.instance_uids):
            missing = len(set(series.instance_uids) - got)
            raise DataError(
                f"{self.url}: partial retrieval of series {series.series_uid}: {len(got)} instance(s) received, "
                f"{len(series.instance_uids)} listed ({missing} missing); nothing was predicted or stored"
            )
        return written

    # storing --------------------------------------------------------------------------------------
    def store(self, paths: list[Path]) -> None:
        """Store the DICOM files ``paths`` in one STOW-RS request; every one must be accepted."""
        import pydicom

        datasets = [pydicom.dcmread(p) for p in paths]
        response = self._call(lambda: self.client.store_instances(datasets=datasets), "storing")
        failed = response.get("FailedSOPSequence") if response is not None else None
        if failed:
            uids = ", ".join(str(item.get("ReferencedSOPInstanceUID", "?")) for item in failed)
            raise DataError(f"{self.url}: the server refused to store {len(failed)} instance(s): {uids}")

    def _search_all(self, search: Any, key: str, what: str) -> list[dict[str, Any]]:
        """Every result of a QIDO-RS search, page after page (``search(offset)``): archives cap how many
        results one answer holds (a cloud store's page of 100 or 5000), so a first answer may be only the
        first page. Stops at an empty page, or at one that brings no new ``key`` (a server that ignores
        the offset and answers the first page again, which would otherwise be asked for forever)."""
        results: list[dict[str, Any]] = []
        seen: set[str] = set()
        while True:
            page = self._call(lambda: search(len(results)), what) or []
            new = [item for item in page if _value(item, key) not in seen]
            if not new:
                return results
            seen.update(_value(item, key) for item in new)
            results.extend(new)

    def _check_listed(self, series_uid: str, listed: int, count: str) -> None:
        """The instances listed are all the series has (its NumberOfSeriesRelatedInstances, when the archive
        gives it): an archive whose pages do not add up (Orthanc with LimitFindInstances set) lists only
        some, and the retrieval, bringing all, would be taken for a broken one."""
        if count.isdigit() and int(count) != listed:
            raise DataError(
                f"{self.url}: series {series_uid} has {count} instance(s) but the archive's search lists {listed} "
                "(does it cap search results, e.g. Orthanc's LimitFindInstances?); nothing was retrieved"
            )

    def _call(self, action: Any, what: str) -> Any:
        """Run ``action``; network and HTTP failures become one :class:`DataError` naming the server."""
        import requests

        try:
            return action()
        except requests.exceptions.HTTPError as error:
            status = error.response.status_code if error.response is not None else None
            if status in (401, 403):
                raise DataError(
                    f"{self.url}: {what}: HTTP {status}: not authorised; give credentials in ${CREDENTIALS_ENV} "
                    "or --dicomweb-credentials FILE"
                ) from None
            if status == 404:
                raise DataError(f"{self.url}: {what}: HTTP 404: not found on this server") from None
            raise DataError(f"{self.url}: {what}: HTTP {status} after retries") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as error:
            reason = type(error).__name__
            raise DataError(
                f"{self.url}: {what}: the server does not answer ({reason}, after retries); is it running?"
            ) from None
        except requests.exceptions.RequestException as error:
            raise DataError(f"{self.url}: {what}: {type(error).__name__}") from None


class _BrokenTransfer(Exception):
    """A response body that ended before its end (connection closed part-way): a partial retrieval.
    Its message is the name of the error the HTTP client raised."""


def _value(item: dict[str, Any], tag: str) -> str:
    """The first value of ``tag`` in a DICOM JSON object ('' when absent)."""
    values = item.get(tag, {}).get("Value") or [""]
    return str(values[0])
