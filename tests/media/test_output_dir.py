"""The output-folder guard: new, empty and our own folders may be written; the user's are refused."""
import pytest

from longvie.media.output_dir import OutputDirError, claim_output_dir, is_ours, mark_output_dir


def test_new_and_empty_folders_are_accepted(tmp_path):
    assert claim_output_dir(tmp_path / "new", "run folder") == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".DS_Store").write_bytes(b"")
    claim_output_dir(tmp_path / "empty", "run folder")
    assert not (tmp_path / "new").exists()  # nothing is created by the check


def test_user_folder_is_refused_and_left_unchanged(tmp_path):
    user = tmp_path / "mine"
    (user / "clips").mkdir(parents=True)
    (user / "video.mp4").write_bytes(b"my video")
    with pytest.raises(OutputDirError) as caught:
        claim_output_dir(user, "run folder")
    message = str(caught.value)
    assert str(user) in message and "video.mp4" in message and "new or empty folder" in message
    assert "\n" not in message
    assert (user / "video.mp4").read_bytes() == b"my video"
    assert sorted(p.name for p in user.iterdir()) == ["clips", "video.mp4"]


def test_a_file_is_refused(tmp_path):
    target = tmp_path / "report"
    target.write_text("x")
    with pytest.raises(OutputDirError, match="is a file, not a folder"):
        claim_output_dir(target, "evaluation report")


def test_our_folders_are_accepted_by_marker_and_kind(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text("{}")
    (run / "video.mp4").write_bytes(b"")
    claim_output_dir(run, "run folder", markers=("manifest.json",))
    out = mark_output_dir(tmp_path / "cam", "camera")
    (out / "depth_00.mp4").write_bytes(b"")
    assert is_ours(out, "camera") and not is_ours(out, "eval")
    claim_output_dir(out, "camera folder", kind="camera")
    with pytest.raises(OutputDirError):
        claim_output_dir(out, "evaluation report", kind="eval")
