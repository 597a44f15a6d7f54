"""PACS in and out (issue 18): node resolution and credentials everywhere; find, pull and
push against a real Orthanc (Debian packages ``orthanc`` and ``orthanc-dicomweb``) over
DICOMweb and DIMSE where it is installed.

The Orthanc fixture starts one server per test module (per xdist worker) on free loopback
ports with a generated JSON configuration (HTTP with basic authentication and the DICOMweb
plug-in, DICOM with our AE title registered for C-GET), waits until it answers and stops it
after. HTTPS is tested through a TLS front (a self-signed certificate made with openssl)
before that Orthanc. Tests that need it are skipped, with the reason, when the binary, the
plug-in or the ``pacs`` extra (dicomweb-client, pynetdicom) is missing.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import glob
import json
import logging
import os
import shutil
import socket
import subprocess
import time
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

from persodose.errors import InputError
from persodose.io import pacs
from persodose.io.seg import read_seg

USER, PASSWORD = "dosimetrist", "not-a-real-s3cret-7f3a"
_PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc", "/usr/local/share/orthanc/plugins")


def _orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin:/usr/local/sbin:/usr/local/bin")


def _dicomweb_plugin() -> str | None:
    for d in _PLUGIN_DIRS:
        hits = sorted(glob.glob(os.path.join(d, "libOrthancDicomWeb.so*")))
        if hits:
            return hits[0]
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 60.0, context=None) -> None:
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    req = urllib.request.Request(url, headers={"Authorization": f"Basic {auth}"})
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"Orthanc exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(req, timeout=2, context=context) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"Orthanc did not answer within {timeout_s} s: {log.read_text()[-2000:]}")


def _need_orthanc() -> tuple[str, str]:
    exe, plugin = _orthanc_binary(), _dicomweb_plugin()
    if exe is None:
        pytest.skip("Orthanc is not installed (Debian package orthanc)")
    if plugin is None:
        pytest.skip("Orthanc's DICOMweb plug-in is not installed (Debian package orthanc-dicomweb)")
    pytest.importorskip("dicomweb_client", reason="the pacs extra is not installed (dicomweb-client)")
    pytest.importorskip("pynetdicom", reason="the pacs extra is not installed (pynetdicom)")
    return exe, plugin


@contextlib.contextmanager
def _running_orthanc(exe: str, root: Path, config: dict, probe: str, context=None):
    """Orthanc on ``config`` (written to ``root/orthanc.json``) until the block ends."""
    cfg = root / "orthanc.json"
    cfg.write_text(json.dumps(config))
    log = root / "orthanc.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([exe, str(cfg)], stdout=fh, stderr=subprocess.STDOUT, cwd=root)
    try:
        _wait_for(probe, proc, log, context=context)
        yield log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()


def _base_config(root: Path, plugin: str, http_port: int) -> dict:
    return {"Name": "persodose-test", "StorageDirectory": str(root / "db"), "IndexDirectory": str(root / "db"),
            "HttpPort": http_port, "RemoteAccessAllowed": False, "AuthenticationEnabled": True,
            "RegisteredUsers": {USER: PASSWORD}, "Plugins": [plugin],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "HttpThreadsCount": 4, "ConcurrentJobs": 1, "SaveJobs": False, "StableAge": 1,
            "HttpCompressionEnabled": False}


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """A running Orthanc: ``{"web": DICOMweb URL, "dimse": dicom:// URL, "http": base URL}``."""
    exe, plugin = _need_orthanc()
    root = tmp_path_factory.mktemp("orthanc")
    http_port, dicom_port, move_port = _free_port(), _free_port(), _free_port()
    config = {
        **_base_config(root, plugin, http_port), "DicomPort": dicom_port, "DicomAet": "ORTHANC",
        "DicomModalities": {"persodose": {"AET": "PERSODOSE", "Host": "127.0.0.1", "Port": move_port,
                                          "AllowFind": True, "AllowGet": True, "AllowMove": True,
                                          "AllowStore": True}},
        "DicomCheckCalledAet": False, "DicomCheckModalityHost": False, "UnknownSopClassAccepted": True,
        "DicomAlwaysAllowStore": True,
    }
    with _running_orthanc(exe, root, config, f"http://127.0.0.1:{http_port}/system") as log:
        yield {"web": f"http://127.0.0.1:{http_port}/dicom-web", "dimse": f"dicom://ORTHANC@127.0.0.1:{dicom_port}",
               "http": f"http://127.0.0.1:{http_port}", "log": log, "move_port": move_port}


class _TlsFront:
    """A TLS front for a local HTTP server (asyncio in a thread): what a hospital's reverse
    proxy does in front of a PACS. (Debian 12's Orthanc 1.10 with "SslEnabled" resets every
    connection after the handshake, so Orthanc's own TLS is not used.)"""

    def __init__(self, target_port: int, certfile: str, keyfile: str):
        import asyncio
        import ssl
        import threading

        self.target_port = target_port
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(certfile, keyfile)
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    def _run(self, ready) -> None:
        import asyncio

        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.ctx))
        self.port = self.server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _handle(self, reader, writer) -> None:
        import asyncio

        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return

        async def pipe(src, dst):
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def orthanc_tls(orthanc, tmp_path_factory):
    """The Orthanc behind HTTPS with a self-signed certificate for 127.0.0.1 (openssl):
    ``{"web": https DICOMweb URL, "ca": the certificate}``."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed (needed to make the test certificate)")
    root = tmp_path_factory.mktemp("tls")
    key, crt = root / "key.pem", root / "cert.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(crt)],
                   check=True, capture_output=True, timeout=120)
    front = _TlsFront(int(orthanc["http"].rsplit(":", 1)[1]), str(crt), str(key))
    try:
        yield {"web": f"https://127.0.0.1:{front.port}/dicom-web", "ca": str(crt)}
    finally:
        front.close()


@pytest.fixture
def creds(monkeypatch):
    monkeypatch.setenv(pacs.ENV_USERNAME, USER)
    monkeypatch.setenv(pacs.ENV_PASSWORD, PASSWORD)
    monkeypatch.setenv(pacs.ENV_CONFIG, "")


@pytest.fixture(scope="module")
def patient(tmp_path_factory):
    """A 10-mm Lu-177 virtual patient on disk, with SEG, RT Structure Set and RT Dose on its CT."""
    from persodose.grid import Kind
    from persodose.io.rtdose import write_rtdose
    from persodose.io.rtstruct import write_rtstruct
    from persodose.io.seg import write_seg
    from persodose.phantoms import make_virtual_patient, write_virtual_patient

    root = tmp_path_factory.mktemp("pacs_patient")
    vp = make_virtual_patient("lu177-dotatate", voxel_mm=10.0, seed=0)
    write_virtual_patient(vp, root / "vp")
    ct_files = sorted(glob.glob(str(root / "vp" / "ct" / "*.dcm")))
    keep = [k for k, n in vp.label_names.items() if n in ("liver", "spleen")]
    labels = vp.labels.with_array(np.where(np.isin(vp.labels.array, keep), vp.labels.array, 0).astype(np.uint16),
                                  Kind.LABELS)
    names = {k: vp.label_names[k] for k in keep}
    out = root / "results"
    write_seg(labels, names, out / "seg.dcm", ct_files)
    write_rtstruct(labels, names, out / "rtstruct.dcm", ct_files)
    dose = vp.ct.with_array(np.linspace(0.0, 2.0, vp.ct.array.size).reshape(vp.ct.shape), Kind.DOSE, unit="Gy")
    write_rtdose(dose, out / "rtdose.dcm", reference_ct_files=ct_files, summation_type="RECORD")
    ct0 = pydicom.dcmread(ct_files[0], stop_before_pixels=True)
    return {"root": root, "ct": root / "vp" / "ct", "spect": root / "vp" / "spect", "results": out,
            "study": str(ct0.StudyInstanceUID), "for": str(ct0.FrameOfReferenceUID), "n_ct": len(ct_files),
            "patient_id": str(ct0.PatientID)}


def _sop_uids(folder: Path) -> set[str]:
    return {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in Path(folder).rglob("*.dcm")}


def _seg_found_back(orthanc, patient, written: Path, folder: Path):
    """The SEG ``written`` is on the PACS in the patient's study, and what comes back is the
    same segments on the CT's frame of reference, referencing the CT series."""
    node = pacs.resolve_node(orthanc["dimse"])
    sent = pydicom.dcmread(written, stop_before_pixels=True)
    series = [s for s in pacs.find_series(node, patient["study"], modality="SEG")
              if s.series_instance_uid == sent.SeriesInstanceUID]
    assert len(series) == 1
    pacs.pull(node, folder, study_uid=patient["study"], series_uids=[series[0].series_instance_uid])
    got = next(folder.rglob("*.dcm"))
    ds = pydicom.dcmread(got, stop_before_pixels=True)
    assert ds.FrameOfReferenceUID == patient["for"] and ds.StudyInstanceUID == patient["study"]
    ct_series = {str(pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID) for f in patient["ct"].glob("*.dcm")}
    assert {str(it.SeriesInstanceUID) for it in ds.ReferencedSeriesSequence} == ct_series
    back, names = read_seg(got)
    mine, my_names = read_seg(written)
    assert names == my_names and np.array_equal(back.array, mine.array)
    return names


# ----------------------------------------------------------------------------- nodes (everywhere)
def test_urls_resolve_to_nodes(monkeypatch):
    monkeypatch.setenv(pacs.ENV_CONFIG, "")
    env = {}
    web = pacs.resolve_node("https://pacs.example.org/dicom-web/", environ=env)
    assert (web.protocol, web.host, web.port, web.tls, web.url) == (
        "dicomweb", "pacs.example.org", 443, True, "https://pacs.example.org/dicom-web")
    dimse = pacs.resolve_node("dicom://ARCHIVE@10.1.2.3:104", environ={pacs.ENV_AET: "DOSE1"})
    assert (dimse.protocol, dimse.called_aet, dimse.calling_aet, dimse.port, dimse.tls) == (
        "dimse", "ARCHIVE", "DOSE1", 104, False)
    assert pacs.resolve_node("dicoms://A@h:2762", environ=env).tls
    for bad, match in (("ftp://h/x", "must start with"), ("dicom://h:104", "AET@host:port"),
                       ("dicom://A@h", "AET@host:port"), ("dicom://WAYTOOLONGAETITLE17@h:1", "AE title"),
                       ("hospital", "neither a URL")):
        with pytest.raises(InputError, match=match):
            pacs.resolve_node(bad, environ=env)


def test_credentials_never_from_the_url_and_never_shown():
    with pytest.raises(InputError) as exc:
        pacs.resolve_node("https://bob:hunter2@pacs.example.org/dicom-web", environ={})
    assert "hunter2" not in str(exc.value) and "command line" in str(exc.value)
    with pytest.raises(InputError, match="user name"):
        pacs.resolve_node("https://bob@pacs.example.org/dicom-web", environ={})
    node = pacs.resolve_node("https://pacs.example.org/dicom-web",
                             environ={pacs.ENV_USERNAME: "bob", pacs.ENV_PASSWORD: "hunter2"})
    assert node.username == "bob" and node.password == "hunter2"
    assert "hunter2" not in repr(node) and "bob" not in repr(node)
    with pytest.raises(InputError, match="without a user name"):
        pacs.resolve_node("https://h/dicom-web", environ={pacs.ENV_PASSWORD: "x"})


def test_no_credentials_in_clear_to_another_machine():
    env = {pacs.ENV_USERNAME: "bob", pacs.ENV_PASSWORD: "pw"}
    with pytest.raises(InputError, match="unencrypted"):
        pacs.resolve_node("http://pacs.example.org/dicom-web", environ=env)
    assert pacs.resolve_node("http://127.0.0.1:8042/dicom-web", environ=env).username == "bob"
    assert pacs.resolve_node("http://localhost:8042/dicom-web", environ=env).username == "bob"
    node = pacs.resolve_node("http://pacs.example.org/dicom-web", environ={**env, pacs.ENV_ALLOW_INSECURE: "1"})
    assert not node.tls and node.username == "bob"


def test_configured_nodes_and_their_permissions(tmp_path):
    conf = tmp_path / "pacs.toml"
    conf.write_text('[nodes.hospital]\nurl = "https://pacs.example.org/dicom-web"\nusername = "dose"\n'
                    'password = "from-file"\n\n[nodes.archive]\nurl = "dicom://ARCH@10.0.0.5:104"\n'
                    'calling_aet = "PDOSE"\n')
    conf.chmod(0o600)
    env = {pacs.ENV_CONFIG: str(conf)}
    node = pacs.resolve_node("hospital", environ=env)
    assert (node.url, node.username, node.password) == ("https://pacs.example.org/dicom-web", "dose", "from-file")
    # a URL takes the configured node's credentials; the environment overrides the file
    by_url = pacs.resolve_node("https://pacs.example.org/dicom-web/", environ={**env, pacs.ENV_PASSWORD: "env"})
    assert (by_url.username, by_url.password) == ("dose", "env")
    assert pacs.resolve_node("archive", environ=env).calling_aet == "PDOSE"
    with pytest.raises(InputError, match="configured: archive, hospital"):
        pacs.resolve_node("nowhere", environ=env)
    conf.chmod(0o644)
    with pytest.raises(InputError, match="chmod 600"):
        pacs.resolve_node("hospital", environ=env)
    with pytest.raises(InputError, match="does not exist"):
        pacs.resolve_node("hospital", environ={pacs.ENV_CONFIG: str(tmp_path / "none.toml")})
    bad = tmp_path / "bad.toml"
    bad.write_text("[nodes.x]\nport = 3\n")
    with pytest.raises(InputError, match="has no url"):
        pacs.resolve_node("x", config_path=bad, environ={})


def test_dicom_files_are_found_by_their_marker(tmp_path):
    from persodose.io.dicom_write import PatientInfo

    src = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    (tmp_path / "a" / ".hidden").mkdir(parents=True)
    src.save_as(tmp_path / "a" / "x.dcm")
    src.save_as(tmp_path / "a" / "noext")
    src.save_as(tmp_path / "a" / ".hidden" / "y.dcm")
    (tmp_path / "a" / "notes.txt").write_text("not DICOM")
    found = pacs.dicom_files([tmp_path / "a"])
    assert sorted(f.name for f in found) == ["noext", "x.dcm"]
    with pytest.raises(InputError, match="no DICOM file"):
        pacs.dicom_files([tmp_path / "a" / "notes.txt"])
    with pytest.raises(InputError, match="does not exist"):
        pacs.dicom_files([tmp_path / "nothing"])
    assert PatientInfo  # the writer module is importable beside pacs


def test_a_received_instance_is_written_under_its_uid_only(tmp_path):
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    path = pacs._write_instance(ds, tmp_path)
    assert path == tmp_path / f"{ds.SOPInstanceUID}.dcm" and pydicom.dcmread(path).SOPInstanceUID == ds.SOPInstanceUID
    for bad in ("../../etc/x", "1.2.3/4", "", "1." * 40 + "1"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about the invalid UI value itself
            ds.SOPInstanceUID = bad
        with pytest.raises(pacs.PacsError, match="valid SOPInstanceUID"):
            pacs._write_instance(ds, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_cli_refuses_credentials_on_the_command_line(cli):
    r = cli("pacs", "find", "--pacs", "https://bob:hunter2@pacs.example.org/dicom-web")
    assert r.returncode == 2 and "hunter2" not in r.stderr + r.stdout
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("persodose: error:")


def test_unreachable_pacs_is_one_line(cli, monkeypatch):
    pytest.importorskip("dicomweb_client", reason="the pacs extra is not installed (dicomweb-client)")
    pytest.importorskip("pynetdicom", reason="the pacs extra is not installed (pynetdicom)")
    monkeypatch.setenv(pacs.ENV_CONFIG, "")
    monkeypatch.setattr(pacs, "HTTP_ATTEMPTS", 1)  # no back-off wait in the test
    port = _free_port()  # nothing listens there
    for url in (f"http://127.0.0.1:{port}/dicom-web", f"dicom://NOBODY@127.0.0.1:{port}"):
        r = cli("pacs", "find", "--pacs", url)
        assert r.returncode == 2, r.stderr
        assert "cannot reach" in r.stderr or "not established" in r.stderr or "aborted" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


# ----------------------------------------------------------------------------- Orthanc
def test_dicomweb_push_find_pull(orthanc, patient, creds, tmp_path, caplog):
    from persodose.io.dicom import read_ct, read_nm

    caplog.set_level(logging.DEBUG)
    node = pacs.resolve_node(orthanc["web"])
    res = pacs.push(node, [patient["ct"], patient["spect"] / "tp1"])
    assert res.n_sent == res.n_stored == patient["n_ct"] + 1
    assert res.study_instance_uids == (patient["study"],)
    studies = pacs.find_studies(node, patient_id=patient["patient_id"])
    assert [s.study_instance_uid for s in studies] == [patient["study"]]
    assert {"CT", "NM"} <= set(studies[0].modalities)
    series = {s.modality: s for s in pacs.find_series(node, patient["study"])}
    assert series["CT"].n_instances == patient["n_ct"]
    pulled = pacs.pull(node, tmp_path / "in", study_uid=patient["study"], modality="CT")
    assert pulled.n_instances == patient["n_ct"] and [s["modality"] for s in pulled.series] == ["CT"]
    ct_dir = tmp_path / "in" / pulled.series[0]["folder"]
    assert _sop_uids(ct_dir) == _sop_uids(patient["ct"])
    a, b = read_ct(patient["ct"]), read_ct(ct_dir)
    assert np.array_equal(a.grid.array, b.grid.array) and np.allclose(a.grid.origin_xyz_mm, b.grid.origin_xyz_mm)
    manifest = json.loads((tmp_path / "in" / pacs.PULL_MANIFEST).read_text())
    assert manifest["study_instance_uid"] == patient["study"] and PASSWORD not in json.dumps(manifest)
    nm = pacs.pull(node, tmp_path / "nm", study_uid=patient["study"], modality="NM")
    nm_file = next((tmp_path / "nm").rglob("*.dcm"))
    sent = next((patient["spect"] / "tp1").glob("*.dcm"))
    assert np.array_equal(read_nm(nm_file).grid.array, read_nm(sent).grid.array)
    assert nm.n_instances == 1
    assert PASSWORD not in caplog.text


def test_dimse_store_find_get(orthanc, patient, creds, tmp_path):
    from persodose.io.rtdose import read_rtdose
    from persodose.io.seg import read_seg

    node = pacs.resolve_node(orthanc["dimse"])
    res = pacs.push(node, [patient["results"]])
    assert res.n_sent == res.n_stored == 3
    studies = pacs.find_studies(node, study_uid=patient["study"])
    assert len(studies) == 1 and studies[0].patient_id == patient["patient_id"]
    mods = {s.modality: s.series_instance_uid for s in pacs.find_series(node, patient["study"])}
    assert {"RTDOSE", "SEG", "RTSTRUCT"} <= set(mods)
    pulled = pacs.pull(node, tmp_path / "back", study_uid=patient["study"],
                       series_uids=[mods["RTDOSE"], mods["SEG"]])
    assert pulled.n_instances == 2
    dose_file = next((tmp_path / "back" / mods["RTDOSE"]).glob("*.dcm"))
    back, orig = read_rtdose(dose_file), read_rtdose(patient["results"] / "rtdose.dcm")
    assert np.array_equal(back.array, orig.array)
    assert pydicom.dcmread(dose_file, stop_before_pixels=True).FrameOfReferenceUID == patient["for"]
    labels, names = read_seg(next((tmp_path / "back" / mods["SEG"]).glob("*.dcm")))
    assert set(names.values()) == {"liver", "spleen"}
    with pytest.raises(pacs.PacsError, match="is not in study"):
        pacs.pull(node, tmp_path / "none", study_uid=patient["study"], series_uids=["1.2.3"])
    assert not (tmp_path / "none").exists()


def test_dimse_c_move_for_a_pacs_without_c_get(orthanc, patient, creds, tmp_path, monkeypatch):
    """C-MOVE: persodose listens on move_port and Orthanc, which knows AE title PERSODOSE at
    that port, sends the series there; a port already taken is said in one line."""
    monkeypatch.setenv(pacs.ENV_RETRIEVE, "move")
    monkeypatch.setenv(pacs.ENV_MOVE_PORT, str(orthanc["move_port"]))
    node = pacs.resolve_node(orthanc["dimse"])
    assert node.retrieve == "move" and node.move_port == orthanc["move_port"]
    pacs.push(node, [patient["spect"]])  # the 4 SPECT time points: 4 series of one file
    pulled = pacs.pull(node, tmp_path / "in", study_uid=patient["study"], modality="NM")
    assert pulled.n_instances == len(pulled.series) == 4
    assert _sop_uids(tmp_path / "in") == _sop_uids(patient["spect"])
    with socket.socket() as busy:  # the port taken by another program: said in one line, nothing written
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
        busy.bind(("0.0.0.0", orthanc["move_port"]))
        busy.listen(1)
        with pytest.raises(pacs.PacsError) as exc:
            pacs.pull(node, tmp_path / "x", study_uid=patient["study"], modality="NM")
    assert "\n" not in str(exc.value) and f"cannot listen on 0.0.0.0:{orthanc['move_port']}" in str(exc.value)
    assert not (tmp_path / "x").exists()
    monkeypatch.delenv(pacs.ENV_MOVE_PORT)
    with pytest.raises(InputError, match="needs move_port"):
        pacs.resolve_node(orthanc["dimse"])


def test_a_pacs_refusing_c_get_is_pulled_by_c_move(patient, tmp_path, monkeypatch):
    """A PACS that offers C-FIND and C-MOVE only (a pynetdicom SCP): with move_port set,
    the refused C-GET context falls back to C-MOVE; without it, one line says what to set."""
    pytest.importorskip("pynetdicom", reason="the pacs extra is not installed (pynetdicom)")
    from pydicom.dataset import Dataset
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import CTImageStorage
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as MOVE

    sent = [pydicom.dcmread(f) for f in sorted(patient["ct"].glob("*.dcm"))[:3]]
    scp_port, move_port = _free_port(), _free_port()

    def on_find(event):
        ident = Dataset()
        ident.QueryRetrieveLevel = "SERIES"
        ident.StudyInstanceUID, ident.SeriesInstanceUID = patient["study"], sent[0].SeriesInstanceUID
        ident.Modality, ident.NumberOfSeriesRelatedInstances = "CT", len(sent)
        yield 0xFF00, ident

    def on_move(event):
        assert event.move_destination.strip() == b"PERSODOSE" or event.move_destination.strip() == "PERSODOSE"
        yield "127.0.0.1", move_port
        yield len(sent)
        for ds in sent:
            yield 0xFF00, ds

    scp = AE(ae_title="FAKEPACS")
    scp.add_supported_context(FIND)
    scp.add_supported_context(MOVE)
    scp.add_requested_context(CTImageStorage)
    server = scp.start_server(("127.0.0.1", scp_port), block=False,
                              evt_handlers=[(evt.EVT_C_FIND, on_find), (evt.EVT_C_MOVE, on_move)])
    try:
        url = f"dicom://FAKEPACS@127.0.0.1:{scp_port}"
        monkeypatch.delenv(pacs.ENV_RETRIEVE, raising=False)
        monkeypatch.setenv(pacs.ENV_CONFIG, "")
        monkeypatch.delenv(pacs.ENV_MOVE_PORT, raising=False)
        with pytest.raises(pacs.PacsError) as exc:
            pacs.pull(pacs.resolve_node(url), tmp_path / "none", study_uid=patient["study"])
        assert "\n" not in str(exc.value) and "does not accept C-GET" in str(exc.value)
        assert "move_port" in str(exc.value) and not (tmp_path / "none").exists()
        monkeypatch.setenv(pacs.ENV_MOVE_PORT, str(move_port))
        node = pacs.resolve_node(url)
        assert node.retrieve == "get"
        pulled = pacs.pull(node, tmp_path / "in", study_uid=patient["study"])
        assert pulled.n_instances == len(sent)
        assert _sop_uids(tmp_path / "in") == {str(ds.SOPInstanceUID) for ds in sent}
    finally:
        server.shutdown()


def test_cli_push_find_pull_and_bad_password(orthanc, patient, creds, tmp_path, cli, monkeypatch):
    r = cli("pacs", "push", "--pacs", orthanc["web"], patient["spect"])
    assert r.returncode == 0, r.stderr
    assert "stored 4 of 4" in r.stdout
    r = cli("pacs", "find", "--pacs", orthanc["dimse"], "--study", patient["study"], "--series", "--json")
    assert r.returncode == 0, r.stderr
    assert sum(s["modality"] == "NM" for s in json.loads(r.stdout)) == 4
    r = cli("pacs", "pull", "--pacs", orthanc["web"], "--study", patient["study"], "--modality", "NM",
            "--out", tmp_path / "spect")
    assert r.returncode == 0, r.stderr
    assert "pulled 4 instance(s) in 4 series" in r.stdout
    monkeypatch.setenv(pacs.ENV_PASSWORD, "wrong-password-123")
    r = cli("pacs", "find", "--pacs", orthanc["web"])
    assert r.returncode == 2 and "HTTP 401" in r.stderr and "wrong-password-123" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = cli("pacs", "pull", "--pacs", orthanc["web"], "--study", patient["study"], "--out", tmp_path / "x")
    assert r.returncode == 2 and not (tmp_path / "x").exists()


def test_internal_reads_the_study_from_the_pacs_and_stores_the_rt_dose_back(orthanc, patient, creds, tmp_path,
                                                                             cli):
    """The issue's end-to-end check: the virtual patient is pushed, ``internal --pacs
    --labels auto`` pulls it, and its RT Dose and the SEG of the labels it used are found back
    in the study, readable and on the CT's frame of reference."""
    from persodose.io.rtdose import read_rtdose

    manifest = json.loads((patient["root"] / "vp" / "manifest.json").read_text())
    pacs.push(pacs.resolve_node(orthanc["web"]), [patient["ct"], patient["spect"]])
    out = tmp_path / "dose"
    r = cli("internal", "--pacs", orthanc["web"], "--study", patient["study"], "--nuclide", "Lu-177",
            "--method", "led", "--calibration-cps-per-mbq", manifest["frames"][0]["calibration_cps_per_mbq"],
            "--labels", "auto", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "stored 2 DICOM result(s)" in r.stdout
    _seg_found_back(orthanc, patient, out / "labels_seg.dcm", tmp_path / "segback")
    seg_names = set(read_seg(out / "labels_seg.dcm")[1].values())  # the run's organs are the SEG's
    with open(out / "organs_led.csv") as fh:
        assert {row["name"] for row in csv.DictReader(fh)} == seg_names
    assert not list(tmp_path.glob(".persodose-pacs-*"))  # the pulled study is gone
    written = next(out.rglob("*rtdose*.dcm"))
    sent = pydicom.dcmread(written, stop_before_pixels=True)
    node = pacs.resolve_node(orthanc["dimse"])
    series = [s for s in pacs.find_series(node, patient["study"], modality="RTDOSE")
              if s.series_instance_uid == sent.SeriesInstanceUID]
    assert len(series) == 1
    back = pacs.pull(node, tmp_path / "back", study_uid=patient["study"], series_uids=[series[0].series_instance_uid])
    got = next((tmp_path / "back").rglob("*.dcm"))
    ds = pydicom.dcmread(got, stop_before_pixels=True)
    assert ds.FrameOfReferenceUID == patient["for"] and ds.StudyInstanceUID == patient["study"]
    assert np.array_equal(read_rtdose(got).array, read_rtdose(written).array) and back.n_instances == 1
    r = cli("internal", "--pacs", orthanc["web"], "--nuclide", "Lu-177", "--out", tmp_path / "x")
    assert r.returncode == 2 and "--study" in r.stderr
    r = cli("internal", "--nuclide", "Lu-177", "--out", tmp_path / "x")
    assert r.returncode == 2 and "give --ct and --emission" in r.stderr


def test_segment_reads_the_ct_from_the_pacs_and_stores_the_seg_back(orthanc, patient, creds, tmp_path, cli):
    pacs.push(pacs.resolve_node(orthanc["web"]), [patient["ct"]])
    out = tmp_path / "seg" / "organs.dcm"
    r = cli("segment", "--pacs", orthanc["web"], "--study", patient["study"], "--organs", "lung_left,lung_right",
            "--out", out)
    assert r.returncode == 0, r.stderr
    assert "stored 1 DICOM result(s)" in r.stdout
    assert set(_seg_found_back(orthanc, patient, out, tmp_path / "back").values()) == {"lung_left", "lung_right"}
    assert not list((tmp_path / "seg").glob(".persodose-pacs-*"))
    r = cli("segment", "--pacs", orthanc["web"], "--study", patient["study"], "--ct", patient["ct"], "--out",
            tmp_path / "y.dcm")
    assert r.returncode == 2 and "not both" in r.stderr
    r = cli("segment", "--pacs", orthanc["web"], "--out", tmp_path / "z.dcm")
    assert r.returncode == 2 and "--study" in r.stderr


def test_ct_reads_the_ct_from_the_pacs_and_stores_the_rt_dose_back(orthanc, patient, creds, tmp_path, cli):
    pacs.push(pacs.resolve_node(orthanc["web"]), [patient["ct"]])
    out = tmp_path / "ctdose"
    r = cli("ct", "--pacs", orthanc["web"], "--study", patient["study"], "--photons", 20000, "--ctdi-photons", 20000,
            "--batches", 2, "--dose-voxel-mm", 20, "--out", out)
    assert r.returncode == 0, r.stderr
    assert "stored 1 DICOM result(s)" in r.stdout
    sent = pydicom.dcmread(next(out.rglob("*rtdose*.dcm")), stop_before_pixels=True)
    assert sent.FrameOfReferenceUID == patient["for"]
    found = pacs.find_series(pacs.resolve_node(orthanc["web"]), patient["study"], modality="RTDOSE")
    assert sent.SeriesInstanceUID in {s.series_instance_uid for s in found}
    r = cli("ct", "--pacs", orthanc["web"], "--study", patient["study"], "--ct", patient["ct"], "--out", tmp_path / "y")
    assert r.returncode == 2 and "not both" in r.stderr


def certifi_or_system() -> str:
    """A CA bundle without the test certificate (what REQUESTS_CA_BUNDLE points to on many machines)."""
    import ssl

    paths = ssl.get_default_verify_paths()
    for f in (paths.cafile, "/etc/ssl/certs/ca-certificates.crt"):
        if f and Path(f).is_file():
            return f
    import certifi

    return certifi.where()


def test_https_verifies_the_certificate(orthanc_tls, creds, monkeypatch, tmp_path):
    """TLS for https:// URLs: with the server's certificate as CA bundle it works; without
    it (a certificate no system CA signed) it is refused in one line, nothing sent."""
    ct = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    ct.save_as(tmp_path / "ct.dcm")
    monkeypatch.setattr(pacs, "HTTP_ATTEMPTS", 1)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi_or_system())  # must not override the node's ca_bundle
    with pytest.raises(pacs.PacsError, match="TLS with https://127.0.0.1"):
        pacs.push(pacs.resolve_node(orthanc_tls["web"]), [tmp_path / "ct.dcm"])
    monkeypatch.setenv(pacs.ENV_CA_BUNDLE, orthanc_tls["ca"])
    node = pacs.resolve_node(orthanc_tls["web"])
    assert node.tls and node.ca_bundle == orthanc_tls["ca"]
    assert pacs.push(node, [tmp_path / "ct.dcm"]).n_stored == 1
    found = pacs.find_studies(node, study_uid=str(ct.StudyInstanceUID))
    assert [s.study_instance_uid for s in found] == [str(ct.StudyInstanceUID)]


def test_dimse_over_tls_verifies_the_certificate(tmp_path, monkeypatch):
    """dicoms://: C-STORE to a pynetdicom storage SCP behind TLS (PS3.15 B.1), refused
    without the server's CA bundle, stored with it."""
    import ssl

    pynetdicom = pytest.importorskip("pynetdicom", reason="the pacs extra is not installed (pynetdicom)")
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed (needed to make the test certificate)")
    key, crt = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(crt)],
                   check=True, capture_output=True, timeout=120)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(str(crt), str(key))
    received = []

    def on_store(event):
        received.append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    from pynetdicom.sop_class import CTImageStorage

    ae = pynetdicom.AE(ae_title="TLSSCP")
    ae.add_supported_context(CTImageStorage)
    port = _free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, ssl_context=server_ctx,
                             evt_handlers=[(pynetdicom.evt.EVT_C_STORE, on_store)])
    try:
        ct = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
        ct.save_as(tmp_path / "ct.dcm")
        monkeypatch.setenv(pacs.ENV_CONFIG, "")
        url = f"dicoms://TLSSCP@127.0.0.1:{port}"
        with pytest.raises(pacs.PacsError, match="over TLS: is the server's certificate trusted"):
            pacs.push(pacs.resolve_node(url, timeout_s=5.0), [tmp_path / "ct.dcm"])
        assert received == []
        monkeypatch.setenv(pacs.ENV_CA_BUNDLE, str(crt))
        assert pacs.push(pacs.resolve_node(url, timeout_s=5.0), [tmp_path / "ct.dcm"]).n_stored == 1
        assert received == [str(ct.SOPInstanceUID)]
    finally:
        server.shutdown()
