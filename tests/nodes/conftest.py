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
