import pytest

from devtools.comfy_host import import_comfy_in_process


@pytest.fixture(scope="session")
def pack():
    return import_comfy_in_process()


@pytest.fixture
def models_dir(tmp_path, pack):
    import folder_paths
    for folder in ("checkpoints", "diffusion_models"):
        (tmp_path / folder).mkdir()
        folder_paths.add_model_folder_path(folder, str(tmp_path / folder), is_default=True)
    return tmp_path


@pytest.fixture
def output_dir(tmp_path, pack):
    """ComfyUI's output folder (where its save nodes write) in tmp_path, for one test."""
    import folder_paths
    before = folder_paths.get_output_directory()
    folder_paths.set_output_directory(str(tmp_path / "output"))
    yield tmp_path / "output"
    folder_paths.set_output_directory(before)
