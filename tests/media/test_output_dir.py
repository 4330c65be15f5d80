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


def test_inputs_temp_files_and_earlier_outputs(tmp_path, capsys):
    """The refinements: the command's own inputs inside the folder and our atomic-write temp files do not
    count; an ``ours`` predicate accepts outputs written before markers; nothing is created by a check."""
    from longvie.media.output_dir import main

    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "drive.mp4").write_bytes(b"input")
    claim_output_dir(folder, "condition folder", inputs=[folder / "drive.mp4"])
    (folder / ".longvie_output.json.0123456789ab.tmp.json").write_text("{")  # another rank's marker, half-written
    claim_output_dir(folder, "condition folder", inputs=[folder / "drive.mp4"])
    with pytest.raises(OutputDirError, match="drive.mp4"):
        claim_output_dir(folder, "condition folder")
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(OutputDirError, match="notes.txt"):
        claim_output_dir(folder, "condition folder", inputs=[folder / "drive.mp4"])
    assert claim_output_dir(folder, "x", ours=lambda path, entries: entries == ["drive.mp4", "notes.txt"]) == folder
    with pytest.raises(OutputDirError):  # an ours() that cannot read is no proof
        claim_output_dir(folder, "x", ours=lambda path, entries: (path / "missing").read_text() == "")
    with pytest.raises(OutputDirError, match=f"^{folder} already holds"):  # a positional argument: no flag
        claim_output_dir(folder, "condition folder", flag="")

    # The shell scripts' check: exit 2 and the sentence, nothing written; --mark marks an allowed folder.
    assert main([str(folder), "--kind", "controls", "--what", "condition folder"]) == 2
    assert "already holds files that are not a LongVie condition folder" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == [".longvie_output.json.0123456789ab.tmp.json", "drive.mp4",
                                                        "notes.txt"]
    assert main([str(tmp_path / "new"), "--kind", "controls", "--mark"]) == 0
    assert is_ours(tmp_path / "new", "controls")
