"""PACS in and out: find, pull and push DICOM over DICOMweb or DIMSE.

A PACS node is named by a URL or by a name in the PACS configuration file:

* ``http://host:port/dicom-web`` or ``https://...``: DICOMweb (DICOM PS3.18): QIDO-RS to
  find, WADO-RS to pull, STOW-RS to push, with ``dicomweb-client``. ``https`` uses TLS with
  certificate verification (the system's CAs, or ``ca_bundle``).
* ``dicom://AET@host:port``: classic DIMSE (PS3.4, PS3.7) with ``pynetdicom``: C-FIND
  (Study Root), C-GET (the PACS sends the instances back on the same association, so it
  needs no route to us) and C-STORE; ``dicoms://`` the same over TLS (PS3.15 B.1). For a
  PACS without C-GET, C-MOVE (PS3.4 C.4.2): persodose listens on ``move_port`` (a storage
  SCP with our AE title, for the length of the retrieval) and asks the PACS to send the
  series to our AE title, which the PACS must know with this machine's address and that
  port. ``retrieve = "move"`` always moves; with only ``move_port`` set, C-GET is tried and
  C-MOVE used when the PACS refuses C-GET's presentation context. Not over TLS (the PACS
  would open the connection to us).

Credentials never come from the command line or the URL: from the environment
(:data:`ENV_USERNAME`, :data:`ENV_PASSWORD`, :data:`ENV_TOKEN`) or from the configuration
file (:data:`ENV_CONFIG`, default :data:`DEFAULT_CONFIG`, TOML, which must then be
readable by its owner only). They are not logged, not in ``repr`` and not in any file
written. Credentials are sent over plain HTTP only to this machine (loopback), unless
:data:`ENV_ALLOW_INSECURE` is ``1``. DIMSE uses AE titles, no credentials.

Configuration file::

    [nodes.hospital]
    url = "https://pacs.example.org/dicom-web"
    username = "dosimetry"
    password = "..."
    ca_bundle = "/etc/ssl/certs/hospital.pem"   # optional

    [nodes.archive]
    url = "dicom://ARCHIVE@10.1.2.3:104"
    calling_aet = "PERSODOSE"                   # optional, default PERSODOSE
    retrieve = "move"                           # optional: "get" (default) or "move"
    move_port = 11113                           # where the PACS sends C-MOVE results
    move_bind = "0.0.0.0"                       # optional, the interface to listen on

A URL given directly takes the credentials of the configured node with the same URL, if
any; the environment overrides the file.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import stat
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from persodose.errors import InputError, PersodoseError

log = logging.getLogger(__name__)

ENV_USERNAME = "PERSODOSE_PACS_USERNAME"
ENV_PASSWORD = "PERSODOSE_PACS_PASSWORD"
#: A bearer token for DICOMweb (instead of a user name and password).
ENV_TOKEN = "PERSODOSE_PACS_TOKEN"
ENV_CONFIG = "PERSODOSE_PACS_CONFIG"
ENV_CA_BUNDLE = "PERSODOSE_PACS_CA_BUNDLE"
#: Our AE title for DIMSE (default :data:`DEFAULT_AET`).
ENV_AET = "PERSODOSE_AET"
ENV_ALLOW_INSECURE = "PERSODOSE_PACS_ALLOW_INSECURE"
#: Local port for C-MOVE results (the node's ``move_port``), and ``get``/``move``.
ENV_MOVE_PORT = "PERSODOSE_PACS_MOVE_PORT"
ENV_RETRIEVE = "PERSODOSE_PACS_RETRIEVE"
DEFAULT_CONFIG = Path("~/.config/persodose/pacs.toml")
DEFAULT_AET = "PERSODOSE"

#: DICOMweb attempts per request (a failed connection or HTTP 408/429/503/504 is retried
#: after 2, 4, ... s, dicomweb-client's exponential back-off).
HTTP_ATTEMPTS = 3

#: File written by :func:`pull` beside the series folders.
PULL_MANIFEST = "pull.json"


class PacsError(PersodoseError):
    """A PACS that cannot be reached, refuses a request or answers with a failure."""


# ----------------------------------------------------------------------------- nodes
@dataclass(frozen=True)
class PacsNode:
    """Where a PACS is and how to talk to it (credentials are kept out of ``repr``).

    Attributes:
        protocol: ``"dicomweb"`` or ``"dimse"``.
        url: the URL without credentials (safe to print).
        host, port: network address.
        tls: HTTPS, or DIMSE over TLS.
        called_aet: the PACS's AE title (DIMSE).
        calling_aet: our AE title (DIMSE).
        ca_bundle: CA certificates to verify the PACS's certificate (None: the system's).
        timeout_s: network timeout, s.
        retrieve: DIMSE retrieval, ``"get"`` (C-GET; C-MOVE as a fall-back when
            ``move_port`` is set) or ``"move"`` (C-MOVE).
        move_port: local port the PACS sends C-MOVE results to; ``move_bind`` the interface.
    """

    protocol: str
    url: str
    host: str
    port: int
    tls: bool = False
    called_aet: str | None = None
    calling_aet: str = DEFAULT_AET
    ca_bundle: str | None = None
    timeout_s: float = 30.0
    retrieve: str = "get"
    move_port: int | None = None
    move_bind: str = "0.0.0.0"
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    @property
    def has_credentials(self) -> bool:
        return bool(self.token or self.username)


def _check_aet(aet: str, what: str) -> str:
    aet = str(aet).strip()
    if not aet or len(aet) > 16 or "\\" in aet or not aet.isprintable():
        raise InputError(f"{what} {aet!r} is not an AE title (1-16 printable characters, PS3.5 6.2)")
    return aet


def _parse_url(url: str) -> dict[str, Any]:
    """Protocol, address and AE title of a node URL; refuses credentials in it."""
    parts = urllib.parse.urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "dicom", "dicoms"):
        raise InputError(f"PACS URL {url!r} must start with http://, https:// (DICOMweb) or dicom://, "
                         "dicoms:// (DIMSE, e.g. dicom://ORTHANC@pacs:4242)")
    if parts.password is not None:
        raise InputError(f"PACS URL {_safe_url(url)!r} holds a password: credentials must not be on the command "
                         f"line; set {ENV_USERNAME}/{ENV_PASSWORD} or a configuration file ({ENV_CONFIG})")
    try:
        port = parts.port
    except ValueError:
        raise InputError(f"PACS URL {_safe_url(url)!r} has a bad port") from None
    if not parts.hostname:
        raise InputError(f"PACS URL {_safe_url(url)!r} has no host")
    if scheme in ("http", "https"):
        if parts.username is not None:
            raise InputError(f"PACS URL {_safe_url(url)!r} holds a user name: credentials must not be on the "
                             f"command line; set {ENV_USERNAME}/{ENV_PASSWORD} or a configuration file")
        clean = urllib.parse.urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), parts.query, ""))
        return dict(protocol="dicomweb", url=clean, host=parts.hostname, tls=scheme == "https",
                    port=port or (443 if scheme == "https" else 80))
    if parts.username is None or port is None:
        raise InputError(f"DIMSE URL {url!r} must read {scheme}://AET@host:port (the PACS's AE title)")
    aet = _check_aet(urllib.parse.unquote(parts.username), "PACS AE title")
    return dict(protocol="dimse", url=f"{scheme}://{aet}@{parts.hostname}:{port}", host=parts.hostname,
                port=port, tls=scheme == "dicoms", called_aet=aet)


def _safe_url(url: str) -> str:
    """``url`` with any user information removed (for messages)."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _config_path(environ: Mapping[str, str]) -> Path:
    return Path(environ.get(ENV_CONFIG) or DEFAULT_CONFIG).expanduser()


def load_config(path: str | os.PathLike | None = None,
                environ: Mapping[str, str] | None = None) -> dict[str, dict]:
    """The ``nodes`` table of the PACS configuration file (``{}`` when there is none).

    Raises:
        InputError: unreadable TOML, a node without ``url``, or a file holding a password
            or token that others than its owner can read.
    """
    import tomllib

    env = os.environ if environ is None else environ
    p = Path(path).expanduser() if path is not None else _config_path(env)
    if not p.is_file():
        if path is not None or env.get(ENV_CONFIG):
            raise InputError(f"PACS configuration file {p} does not exist")
        return {}
    try:
        doc = tomllib.loads(p.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"PACS configuration file {p} cannot be read: {exc}") from None
    nodes = doc.get("nodes", {})
    if not isinstance(nodes, dict) or not all(isinstance(v, dict) for v in nodes.values()):
        raise InputError(f"PACS configuration file {p}: [nodes.NAME] tables expected")
    for name, node in nodes.items():
        if "url" not in node:
            raise InputError(f"PACS configuration file {p}: node {name!r} has no url")
    secret = any(n.get("password") or n.get("token") for n in nodes.values())
    if secret and os.name == "posix" and stat.S_IMODE(p.stat().st_mode) & 0o077:
        raise InputError(f"PACS configuration file {p} holds credentials and others can read it: chmod 600 {p}")
    return nodes


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _move_settings(conf: Mapping[str, Any], env: Mapping[str, str], fields: dict) -> dict:
    """``retrieve``, ``move_port`` and ``move_bind`` of a node (environment over file)."""
    retrieve = str(env.get(ENV_RETRIEVE) or conf.get("retrieve") or "get").strip().lower()
    if retrieve not in ("get", "move"):
        raise InputError(f"PACS retrieve {retrieve!r} must be get or move")
    raw = env.get(ENV_MOVE_PORT) or conf.get("move_port")
    port = None
    if raw not in (None, ""):
        try:
            port = int(raw)
        except (TypeError, ValueError):
            port = -1
        if not 0 < port < 65536:
            raise InputError(f"PACS move_port {raw!r} must be a port number (1-65535)")
    if retrieve == "move" and fields.get("protocol") == "dimse" and port is None:
        raise InputError(f"PACS retrieve = move needs move_port (or {ENV_MOVE_PORT}): the port the PACS "
                         "sends the instances to")
    return {"retrieve": retrieve, "move_port": port, "move_bind": str(conf.get("move_bind") or "0.0.0.0")}


def resolve_node(spec: str, *, config_path: str | os.PathLike | None = None,
                 environ: Mapping[str, str] | None = None, timeout_s: float = 30.0) -> PacsNode:
    """The :class:`PacsNode` of a URL or of a node name of the configuration file.

    Args:
        spec: a URL (see the module docstring) or a configured node name.
        config_path: configuration file (default ``$PERSODOSE_PACS_CONFIG`` or
            :data:`DEFAULT_CONFIG`).
        environ: environment to read (default ``os.environ``).
        timeout_s: network timeout, s.

    Raises:
        InputError: an unknown name, a bad URL, credentials in the URL, or credentials that
            would go unencrypted to another machine.
    """
    env = os.environ if environ is None else environ
    spec = str(spec).strip()
    nodes = load_config(config_path, env)
    if "://" in spec:
        conf = next((n for n in nodes.values() if _parse_url(str(n["url"]))["url"] == _parse_url(spec)["url"]), {})
        url = spec
    elif spec in nodes:
        conf, url = nodes[spec], str(nodes[spec]["url"])
    else:
        known = f" (configured: {', '.join(sorted(nodes))})" if nodes else ""
        raise InputError(f"PACS {spec!r} is neither a URL (http://, https://, dicom://) nor a configured node{known}")
    fields = _parse_url(url)
    creds = {k: env.get(e) or conf.get(k) for k, e in
             (("username", ENV_USERNAME), ("password", ENV_PASSWORD), ("token", ENV_TOKEN))}
    if creds["password"] and not creds["username"]:
        raise InputError(f"a PACS password is set without a user name ({ENV_USERNAME})")
    ca = env.get(ENV_CA_BUNDLE) or conf.get("ca_bundle")
    if ca and not Path(ca).expanduser().is_file():
        raise InputError(f"PACS CA bundle {ca} does not exist")
    aet = _check_aet(env.get(ENV_AET) or conf.get("calling_aet") or DEFAULT_AET, "calling AE title")
    node = PacsNode(**fields, calling_aet=aet, ca_bundle=str(Path(ca).expanduser()) if ca else None,
                    timeout_s=float(conf.get("timeout_s", timeout_s)), **_move_settings(conf, env, fields), **creds)
    if node.protocol == "dimse" and node.has_credentials:
        log.debug("DIMSE node %s: credentials are not used (AE titles only)", node.url)
    if (node.protocol == "dicomweb" and node.has_credentials and not node.tls and not _is_loopback(node.host)
            and env.get(ENV_ALLOW_INSECURE) != "1"):
        raise InputError(f"credentials would be sent unencrypted to {node.url}: use https:// "
                         f"(or set {ENV_ALLOW_INSECURE}=1 on a trusted network)")
    return node


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True)
class StudyRecord:
    """One study a PACS answered (empty strings where it did not say)."""

    study_instance_uid: str
    patient_id: str = ""
    patient_name: str = ""
    study_date: str = ""
    study_time: str = ""
    study_description: str = ""
    accession_number: str = ""
    modalities: tuple[str, ...] = ()
    n_series: int | None = None
    n_instances: int | None = None


@dataclass(frozen=True)
class SeriesRecord:
    """One series a PACS answered."""

    study_instance_uid: str
    series_instance_uid: str
    modality: str = ""
    series_number: int | None = None
    series_description: str = ""
    n_instances: int | None = None


@dataclass(frozen=True)
class PullResult:
    """What :func:`pull` wrote: the folder, one entry per series (``series_instance_uid``,
    ``modality``, ``series_description``, ``folder``, ``files``) and the instance count."""

    out_dir: Path
    study_instance_uid: str
    series: tuple[dict, ...]
    n_instances: int


@dataclass(frozen=True)
class PushResult:
    """What :func:`push` stored: instances sent and stored, and the studies they belong to."""

    n_sent: int
    n_stored: int
    study_instance_uids: tuple[str, ...]


def _text(ds, keyword: str) -> str:
    from pydicom.multival import MultiValue

    v = ds.get(keyword)
    if v is None:
        return ""
    if isinstance(v, (list, tuple, MultiValue)):
        return "\\".join(str(x) for x in v)
    return str(v)


def _int(ds, keyword: str) -> int | None:
    v = ds.get(keyword)
    try:
        return int(v) if v not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _study_record(ds) -> StudyRecord:
    mods = ds.get("ModalitiesInStudy")
    if mods in (None, ""):
        mods = ()
    elif isinstance(mods, (list, tuple)) or type(mods).__name__ == "MultiValue":
        mods = tuple(str(m) for m in mods)
    else:
        mods = (str(mods),)
    return StudyRecord(study_instance_uid=_text(ds, "StudyInstanceUID"), patient_id=_text(ds, "PatientID"),
                       patient_name=_text(ds, "PatientName"), study_date=_text(ds, "StudyDate"),
                       study_time=_text(ds, "StudyTime"), study_description=_text(ds, "StudyDescription"),
                       accession_number=_text(ds, "AccessionNumber"), modalities=mods,
                       n_series=_int(ds, "NumberOfStudyRelatedSeries"),
                       n_instances=_int(ds, "NumberOfStudyRelatedInstances"))


def _series_record(ds, study_uid: str) -> SeriesRecord:
    return SeriesRecord(study_instance_uid=_text(ds, "StudyInstanceUID") or study_uid,
                        series_instance_uid=_text(ds, "SeriesInstanceUID"), modality=_text(ds, "Modality"),
                        series_number=_int(ds, "SeriesNumber"), series_description=_text(ds, "SeriesDescription"),
                        n_instances=_int(ds, "NumberOfSeriesRelatedInstances"))


#: Attributes asked for (return keys) at each query level.
_STUDY_KEYS = ("StudyInstanceUID", "PatientID", "PatientName", "StudyDate", "StudyTime", "StudyDescription",
               "AccessionNumber", "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances")
_SERIES_KEYS = ("StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription",
                "NumberOfSeriesRelatedInstances")


# ----------------------------------------------------------------------------- public API
def find_studies(node: PacsNode, *, patient_id: str | None = None, study_uid: str | None = None,
                 modality: str | None = None, study_date: str | None = None,
                 accession_number: str | None = None, limit: int | None = None) -> list[StudyRecord]:
    """Studies matching the filters (QIDO-RS or C-FIND at STUDY level, PS3.4 C.6.2).

    Args:
        node: the PACS.
        patient_id, study_uid, accession_number: exact matches (``*`` and ``?`` wildcards are
            passed on as DICOM wildcard matching, PS3.4 C.2.2.2.4).
        modality: a modality in the study (ModalitiesInStudy), e.g. ``"NM"``.
        study_date: ``YYYYMMDD`` or a range ``YYYYMMDD-YYYYMMDD``.
        limit: at most this many studies.

    Raises:
        PacsError: the PACS cannot be reached or refuses the query.
    """
    filters = {k: v for k, v in (("PatientID", patient_id), ("StudyInstanceUID", study_uid),
                                 ("ModalitiesInStudy", modality), ("StudyDate", study_date),
                                 ("AccessionNumber", accession_number)) if v}
    with _backend(node) as b:
        found = b.find("STUDY", filters, _STUDY_KEYS, limit)
    return [_study_record(ds) for ds in found]


def find_series(node: PacsNode, study_uid: str, *, modality: str | None = None) -> list[SeriesRecord]:
    """The series of one study (QIDO-RS or C-FIND at SERIES level), optionally of one modality."""
    filters = {"StudyInstanceUID": study_uid, **({"Modality": modality} if modality else {})}
    with _backend(node) as b:
        found = b.find("SERIES", filters, _SERIES_KEYS, None)
    return [_series_record(ds, study_uid) for ds in found]


def pull(node: PacsNode, out_dir: str | os.PathLike, *, study_uid: str,
         series_uids: Iterable[str] | None = None, modality: str | None = None) -> PullResult:
    """Retrieve a study (or some of its series) into ``out_dir``, atomically.

    Layout: ``out_dir/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`` and :data:`PULL_MANIFEST`
    (the PACS URL without credentials, the study, and per series its modality, description,
    folder and file count). The instances are written as received.

    Raises:
        InputError: ``out_dir`` is a folder persodose did not write.
        PacsError: the PACS fails, or the study (or a requested series) has no instance.
    """
    from persodose.outputs import atomic_dir

    series = find_series(node, study_uid, modality=modality)
    wanted = set(series_uids or [])
    if wanted:
        missing = wanted - {s.series_instance_uid for s in series}
        if missing:
            raise PacsError(f"series {sorted(missing)[0]} is not in study {study_uid} on {node.url}")
        series = [s for s in series if s.series_instance_uid in wanted]
    if not series:
        raise PacsError(f"study {study_uid} has no series{' of modality ' + modality if modality else ''} "
                        f"on {node.url}")
    entries, total = [], 0
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp, _backend(node) as b:
        for s in series:
            folder = tmp / s.series_instance_uid
            folder.mkdir()
            n = b.retrieve(study_uid, s.series_instance_uid, folder)
            if n == 0:
                raise PacsError(f"series {s.series_instance_uid} of study {study_uid} came back empty from {node.url}")
            log.info("pulled %d instance(s) of %s series %s", n, s.modality or "?", s.series_instance_uid)
            entries.append({"series_instance_uid": s.series_instance_uid, "modality": s.modality,
                            "series_description": s.series_description, "folder": s.series_instance_uid,
                            "files": n})
            total += n
        doc = {"pacs": node.url, "protocol": node.protocol, "study_instance_uid": study_uid, "series": entries}
        (tmp / PULL_MANIFEST).write_text(json.dumps(doc, indent=1))
    return PullResult(out_dir, study_uid, tuple(entries), total)


def dicom_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The DICOM files among ``paths`` (files, or folders searched recursively): files with
    the ``DICM`` preamble marker (PS3.10 7.1); hidden files and folders are skipped.

    Raises:
        InputError: a path that does not exist, or no DICOM file at all.
    """
    out: list[Path] = []
    for p in (Path(x) for x in paths):
        if not p.exists():
            raise InputError(f"{p} does not exist")
        candidates = [p] if p.is_file() else sorted(
            f for f in p.rglob("*") if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts))
        out += [f for f in candidates if _is_dicom(f)]
    if not out:
        raise InputError(f"no DICOM file in {', '.join(str(p) for p in paths)}")
    return out


def _is_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def push(node: PacsNode, paths: Iterable[str | os.PathLike], *, batch: int = 32) -> PushResult:
    """Store the DICOM files under ``paths`` in the PACS (STOW-RS or C-STORE).

    Files are read and sent ``batch`` at a time; nothing is modified.

    Raises:
        InputError: no DICOM file, or a file that cannot be read.
        PacsError: the PACS refuses an instance or cannot be reached.
    """
    import pydicom

    files = dicom_files(paths)
    studies: list[str] = []
    stored = 0
    with _backend(node) as b:
        for i in range(0, len(files), batch):
            chunk = []
            for f in files[i:i + batch]:
                try:
                    chunk.append(pydicom.dcmread(f))
                except Exception as exc:  # pydicom raises many types on corrupt input
                    raise InputError(f"{f} cannot be read as DICOM: {exc}") from None
            stored += b.store(chunk)
            for ds in chunk:
                uid = str(ds.get("StudyInstanceUID", ""))
                if uid and uid not in studies:
                    studies.append(uid)
    log.info("stored %d of %d instance(s) on %s", stored, len(files), node.url)
    return PushResult(len(files), stored, tuple(studies))


# ----------------------------------------------------------------------------- back-ends
class _backend:
    """Context manager giving the back-end of a node (one association or HTTP session)."""

    def __init__(self, node: PacsNode):
        self.node = node
        self.impl = None

    def __enter__(self):
        self.impl = _DicomWeb(self.node) if self.node.protocol == "dicomweb" else _Dimse(self.node)
        return self.impl

    def __exit__(self, *exc):
        self.impl.close()
        return False


#: A UID: digits and dots, at most 64 characters (PS3.5 9.1).
_UID_RE = re.compile(r"[0-9]+(\.[0-9]+)*")


def _write_instance(ds, folder: Path) -> Path:
    """Write a received instance as ``<SOPInstanceUID>.dcm`` (PS3.10 file, its file meta
    kept or made)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    uid = str(ds.get("SOPInstanceUID", "") or "")
    if len(uid) > 64 or not _UID_RE.fullmatch(uid):  # also keeps the file name inside the folder
        raise PacsError(f"an instance without a valid SOPInstanceUID came back ({uid[:80]!r})")
    meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = uid
    if "TransferSyntaxUID" not in meta:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    path = folder / f"{uid}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


class _DicomWeb:
    """QIDO-RS / WADO-RS / STOW-RS with ``dicomweb-client`` over one ``requests`` session."""

    def __init__(self, node: PacsNode):
        from persodose._optional import optional_import

        optional_import("dicomweb_client", "pacs")
        from dicomweb_client.api import DICOMwebClient

        self.node = node
        self.session = _session_class()(node.ca_bundle)
        if node.token:
            self.session.headers["Authorization"] = f"Bearer {node.token}"
        elif node.username:
            self.session.auth = (node.username, node.password or "")
        self.client = DICOMwebClient(node.url, session=self.session, timeout=node.timeout_s)
        self.client.set_http_retry_params(retry=HTTP_ATTEMPTS > 1, max_attempts=HTTP_ATTEMPTS)

    def close(self) -> None:
        self.session.close()

    def _call(self, what: str, fn, *args, **kw):
        import requests

        try:
            return fn(*args, **kw)
        except requests.HTTPError as exc:
            code = exc.response.status_code if exc.response is not None else "?"
            hint = " (check the credentials)" if code in (401, 403) else ""
            raise PacsError(f"{what} on {self.node.url} failed: HTTP {code}{hint}") from None
        except requests.exceptions.SSLError as exc:
            raise PacsError(f"TLS with {self.node.url} failed (certificate?): {type(exc).__name__}") from None
        except requests.RequestException as exc:
            raise PacsError(f"{what} on {self.node.url} failed: cannot reach it ({type(exc).__name__})") from None

    def find(self, level: str, filters: dict, keys: tuple, limit: int | None) -> list:
        from pydicom.dataset import Dataset

        query = dict(filters)
        study = query.pop("StudyInstanceUID", None) if level == "SERIES" else None
        if level == "STUDY":
            found = self._call("QIDO-RS study search", self.client.search_for_studies, search_filters=query,
                               fields=list(keys), limit=limit)
        else:
            found = self._call("QIDO-RS series search", self.client.search_for_series, study_instance_uid=study,
                               search_filters=query, fields=list(keys), limit=limit)
        return [Dataset.from_json(item) for item in found]

    def retrieve(self, study_uid: str, series_uid: str, folder: Path) -> int:
        it = self._call("WADO-RS series retrieval", self.client.iter_series, study_uid, series_uid)
        n = 0
        for ds in _guarded(it, self, "WADO-RS series retrieval"):
            _write_instance(ds, folder)
            n += 1
        return n

    def store(self, datasets: list) -> int:
        resp = self._call("STOW-RS", self.client.store_instances, datasets=datasets)
        failed = list(resp.get("FailedSOPSequence", []) if resp is not None else [])
        if failed:
            f = failed[0]
            raise PacsError(f"STOW-RS on {self.node.url} refused {len(failed)} instance(s), e.g. "
                            f"{f.get('ReferencedSOPInstanceUID', '?')} (reason {f.get('FailureReason', '?')})")
        ok = resp.get("ReferencedSOPSequence", []) if resp is not None else []
        return len(ok) if ok else len(datasets)


def _session_class():
    """A ``requests.Session`` that verifies with its own CA bundle when it has one: a plain
    session's ``verify`` loses to ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` of the
    environment (requests' ``merge_environment_settings``), so a configured ``ca_bundle``
    would be ignored on machines that set them."""
    import requests

    class _Session(requests.Session):
        def __init__(self, ca_bundle: str | None):
            super().__init__()
            self.ca_bundle = ca_bundle
            self.verify = ca_bundle or True

        def merge_environment_settings(self, url, proxies, stream, verify, cert):
            settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
            if self.ca_bundle:
                settings["verify"] = self.ca_bundle
            return settings

    return _Session


def _guarded(iterator: Iterator, backend: _DicomWeb, what: str) -> Iterator:
    """Iterate, turning network errors during streaming into :class:`PacsError`."""
    while True:
        try:
            item = backend._call(what, next, iterator, None)
        except StopIteration:  # pragma: no cover - next() with a default never raises it
            return
        if item is None:
            return
        yield item


#: Storage SOP classes a C-GET accepts back (PS3.4 B.5): images persodose reads, the RT and
#: SEG objects it writes, dose reports and registrations. At most 128 contexts fit in one
#: association, with the query/retrieve model.
_GET_STORAGE_CLASSES = (
    "CTImageStorage", "EnhancedCTImageStorage", "PositronEmissionTomographyImageStorage",
    "EnhancedPETImageStorage", "NuclearMedicineImageStorage", "MRImageStorage", "EnhancedMRImageStorage",
    "RTDoseStorage", "RTStructureSetStorage", "RTPlanStorage", "SegmentationStorage",
    "SecondaryCaptureImageStorage", "BasicTextSRStorage", "EnhancedSRStorage", "ComprehensiveSRStorage",
    "XRayRadiationDoseSRStorage", "RadiopharmaceuticalRadiationDoseSRStorage", "EncapsulatedPDFStorage",
    "SpatialRegistrationStorage", "DeformableSpatialRegistrationStorage",
)

#: Transfer syntaxes offered for what comes back: uncompressed first, then lossless ones.
_GET_TRANSFER_SYNTAXES = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.1.99",
                          "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.70",
                          "1.2.840.10008.1.2.5")

#: DIMSE statuses (PS3.4 C.4.1.1.4 / C.4.3.1.4): pending and success.
_PENDING = (0xFF00, 0xFF01)


class _Dimse:
    """C-FIND / C-GET or C-MOVE / C-STORE with ``pynetdicom``, one association per operation."""

    def __init__(self, node: PacsNode):
        from persodose._optional import optional_import

        optional_import("pynetdicom", "pacs")
        self.node = node

    def close(self) -> None:
        pass

    def _tls_args(self):
        if not self.node.tls:
            return None
        import ssl

        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.node.ca_bundle)
        return (ctx, self.node.host)

    def _associate(self, ae, what: str, *, context_refusal_ok: bool = False, **kw):
        """An established association; with ``context_refusal_ok`` also one the PACS ended
        because it accepted none of the presentation contexts (pynetdicom aborts then)."""
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.node.timeout_s
        import ssl

        try:
            assoc = ae.associate(self.node.host, self.node.port, ae_title=self.node.called_aet,
                                 tls_args=self._tls_args(), **kw)
        except ssl.SSLError as exc:
            raise PacsError(f"{what}: TLS with {self.node.url} failed (certificate?): {type(exc).__name__}") from None
        except OSError as exc:
            raise PacsError(f"{what}: cannot reach {self.node.url} ({type(exc).__name__})") from None
        if not assoc.is_established and context_refusal_ok and assoc.is_aborted and assoc.rejected_contexts \
                and not assoc.accepted_contexts:
            return assoc
        if not assoc.is_established:
            why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "not established"
            tls = "; over TLS: is the server's certificate trusted (ca_bundle)?" if self.node.tls else ""
            raise PacsError(f"{what}: association with {self.node.url} {why} (AE titles "
                            f"{self.node.calling_aet} -> {self.node.called_aet}{tls})")
        return assoc

    def _ae(self):
        from pynetdicom import AE

        return AE(ae_title=self.node.calling_aet)

    def find(self, level: str, filters: dict, keys: tuple, limit: int | None) -> list:
        from pydicom.dataset import Dataset
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

        query = Dataset()
        query.QueryRetrieveLevel = level
        for k in keys:
            setattr(query, k, "")
        for k, v in filters.items():
            setattr(query, k, v)
        ae = self._ae()
        ae.add_requested_context(FIND)
        assoc = self._associate(ae, f"C-FIND {level.lower()}")
        out = []
        try:
            for status, ident in assoc.send_c_find(query, FIND):
                code = getattr(status, "Status", None)
                if code in _PENDING and ident is not None:
                    out.append(ident)
                elif code is None:
                    raise PacsError(f"C-FIND on {self.node.url}: no answer (timeout or aborted association)")
                elif code != 0x0000:
                    raise PacsError(f"C-FIND on {self.node.url} failed with status 0x{code:04X}")
        finally:
            if assoc.is_established:
                assoc.release()
        return out[:limit] if limit else out

    def retrieve(self, study_uid: str, series_uid: str, folder: Path) -> int:
        """The series' instances into ``folder``: C-GET, or C-MOVE (module docstring)."""
        from pydicom.dataset import Dataset

        query = Dataset()
        query.QueryRetrieveLevel = "SERIES"
        query.StudyInstanceUID = study_uid
        query.SeriesInstanceUID = series_uid
        if self.node.retrieve == "move":
            return self._move(query, folder)
        n = self._get(query, folder)
        return self._move(query, folder) if n is None else n

    @staticmethod
    def _store_handler(folder: Path, written: list, errors: list):
        """An EVT_C_STORE handler writing each instance under its UID in ``folder``."""
        def on_store(event):
            try:
                ds = event.dataset
                ds.file_meta = event.file_meta
                written.append(_write_instance(ds, folder))
                return 0x0000
            except Exception as exc:  # report, refuse this instance (status: out of resources)
                errors.append(f"{type(exc).__name__}: {exc}")
                return 0xA700
        return on_store

    def _check_final(self, what: str, final, written: list, errors: list) -> int:
        if errors:
            raise PacsError(f"{what} from {self.node.url}: {len(errors)} instance(s) could not be written: {errors[0]}")
        if final not in (0x0000, None):  # 0xB000: some sub-operations failed; the series is incomplete
            raise PacsError(f"{what} on {self.node.url} failed with status 0x{final:04X} "
                            f"({len(written)} instance(s) received)")
        return len(written)

    def _get(self, query, folder: Path) -> int | None:
        """C-GET; ``None`` when the PACS refuses C-GET and a ``move_port`` allows C-MOVE."""
        from pynetdicom import build_role, evt, sop_class
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GET

        ae = self._ae()
        ae.add_requested_context(GET)
        roles = []
        for name in _GET_STORAGE_CLASSES:
            uid = getattr(sop_class, name)
            ae.add_requested_context(uid, list(_GET_TRANSFER_SYNTAXES))
            roles.append(build_role(uid, scp_role=True))
        written: list[Path] = []
        errors: list[str] = []
        handler = self._store_handler(folder, written, errors)
        assoc = self._associate(ae, "C-GET", context_refusal_ok=True, ext_neg=roles,
                                evt_handlers=[(evt.EVT_C_STORE, handler)])
        final = None
        try:
            if not any(cx.abstract_syntax == GET for cx in assoc.accepted_contexts):  # C-GET refused
                if self.node.move_port is not None and not self.node.tls:
                    log.info("%s does not accept C-GET: C-MOVE to %s", self.node.url, self.node.calling_aet)
                    return None
                raise PacsError(f"{self.node.url} does not accept C-GET: set retrieve = \"move\" and move_port "
                                f"(or {ENV_MOVE_PORT}) and register AE title {self.node.calling_aet} with this "
                                "machine's address and that port on the PACS")
            for status, _ in assoc.send_c_get(query, GET):
                final = getattr(status, "Status", None)
                if final is None:
                    raise PacsError(f"C-GET on {self.node.url}: no answer (timeout or aborted association)")
        finally:
            if assoc.is_established:
                assoc.release()
        return self._check_final("C-GET", final, written, errors)

    def _move(self, query, folder: Path) -> int:
        """C-MOVE to our AE title, received by a storage SCP on ``move_port`` meanwhile."""
        from pynetdicom import AE, evt, sop_class
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as MOVE

        if self.node.tls:
            raise PacsError(f"C-MOVE over TLS is not supported ({self.node.url} would connect back to us): use C-GET")
        written: list[Path] = []
        errors: list[str] = []
        scp = AE(ae_title=self.node.calling_aet)
        scp.acse_timeout = scp.dimse_timeout = scp.network_timeout = self.node.timeout_s
        for name in _GET_STORAGE_CLASSES:
            scp.add_supported_context(getattr(sop_class, name), list(_GET_TRANSFER_SYNTAXES))
        try:
            server = scp.start_server((self.node.move_bind, self.node.move_port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._store_handler(folder, written, errors))])
        except OSError as exc:
            raise PacsError(f"C-MOVE: cannot listen on {self.node.move_bind}:{self.node.move_port} for the PACS's "
                            f"C-STORE ({exc.strerror or type(exc).__name__})") from None
        final = None
        try:
            ae = self._ae()
            ae.add_requested_context(MOVE)
            assoc = self._associate(ae, "C-MOVE")
            try:
                for status, _ in assoc.send_c_move(query, self.node.calling_aet, MOVE):
                    final = getattr(status, "Status", None)
                    if final is None:
                        raise PacsError(f"C-MOVE on {self.node.url}: no answer (timeout or aborted association)")
                    if final == 0xA801:  # Refused: Move Destination unknown (PS3.4 C.4.2.1.4.1)
                        raise PacsError(f"C-MOVE on {self.node.url}: the PACS does not know move destination "
                                        f"{self.node.calling_aet} (register it with this machine's address and "
                                        f"port {self.node.move_port})")
            finally:
                if assoc.is_established:
                    assoc.release()
        finally:
            server.shutdown()
        return self._check_final("C-MOVE", final, written, errors)

    def store(self, datasets: list) -> int:
        ae = self._ae()
        contexts = {}
        for ds in datasets:
            ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "1.2.840.10008.1.2.1"))
            contexts.setdefault(str(ds.SOPClassUID), set()).add(ts)
        if len(contexts) > 127:
            raise InputError(f"{len(contexts)} SOP classes in one batch: at most 127 fit in one association")
        for uid, syntaxes in contexts.items():
            ae.add_requested_context(uid, sorted(syntaxes | {"1.2.840.10008.1.2.1", "1.2.840.10008.1.2"}))
        assoc = self._associate(ae, "C-STORE")
        stored = 0
        try:
            for ds in datasets:
                status = assoc.send_c_store(ds)
                code = getattr(status, "Status", None)
                if code is None:
                    raise PacsError(f"C-STORE on {self.node.url}: no answer (timeout or aborted association)")
                if code not in (0x0000, 0xB000, 0xB007, 0xB006):  # success or warnings (PS3.4 B.2.3)
                    raise PacsError(f"C-STORE of {ds.get('SOPInstanceUID', '?')} on {self.node.url} failed with "
                                    f"status 0x{code:04X}")
                stored += 1
        finally:
            if assoc.is_established:
                assoc.release()
        return stored
