"""Where a checkpoint comes from: a release's short name, an ``open-mmlab://``
name, an http(s) URL or a path, made a local file (downloads cached where
mmengine's are, so either finds the other's)."""
import hashlib
import os
import urllib.parse

import torch
# _get_mmengine_home is private, but it is where load_from_openmmlab looks
from mmengine.runner.checkpoint import (_get_mmengine_home,
                                        get_deprecated_model_names,
                                        get_external_models)

from .releases import RELEASES

# The authors' release files (their package gets the same from wasabisys.com)
RELEASE_URL = ('https://github.com/zhanghang1989/ResNeSt/releases/download/'
               'weights_step1/{}')
# OpenMMLab's own files, in mmdet's and mmseg's configs: open-mmlab://resnest50
OPENMMLAB_SCHEMES = ('open-mmlab://', 'openmmlab://')


def resolve_checkpoint(checkpoint: str | os.PathLike) -> str:
    """A local file for ``checkpoint``: a short name, an ``open-mmlab://``
    name, an http(s) URL, or a path (see :func:`download_checkpoint`)."""
    checkpoint = os.fspath(checkpoint)
    if checkpoint in RELEASES:
        release = RELEASES[checkpoint]
        return download_checkpoint(
            RELEASE_URL.format(release.file), release.sha256)
    if checkpoint.startswith(OPENMMLAB_SCHEMES):
        return _openmmlab_file(checkpoint)
    if checkpoint.startswith(('http://', 'https://')):
        return download_checkpoint(checkpoint)
    if os.path.isfile(checkpoint):
        return checkpoint
    raise FileNotFoundError(
        f'checkpoint {checkpoint!r} is not a file. Give the path of a '
        f'checkpoint in any accepted layout, an http(s) URL, an '
        f'open-mmlab:// name, or one of {sorted(RELEASES)}.')


def _openmmlab_file(checkpoint: str) -> str:
    """The file mmengine's ``load_from_openmmlab`` reads for ``checkpoint``:
    a URL from its tables, cached in the torch hub cache, or a path under
    mmengine's home. No hash is checked, as mmengine checks none."""
    name = checkpoint.split('://', 1)[1]
    name = get_deprecated_model_names().get(name, name)
    urls = get_external_models()
    if name not in urls:
        raise FileNotFoundError(
            f'{checkpoint} is not in mmengine\'s table of OpenMMLab weights '
            f'(mmengine/hub/openmmlab.json); ResNeSt names there: '
            f'{sorted(n for n in urls if n.startswith("resnest"))}.')
    url = urls[name]
    if url.startswith(('http://', 'https://')):
        return download_checkpoint(url)
    path = os.path.join(_get_mmengine_home(), url)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f'{checkpoint} is the file {path} (mmengine\'s home, set by '
            f'$MMENGINE_HOME), which does not exist.')
    return path


def download_checkpoint(url: str, hash_prefix: str | None = None) -> str:
    """The torch hub cache's copy of ``url`` (where mmengine's
    ``load_from_http`` puts it), downloaded if absent; its sha256 must start
    with ``hash_prefix``, if given, on download and on every use (so a
    truncated copy cannot load); offline, the error says where to put it."""
    filename = os.path.basename(urllib.parse.urlparse(url).path)
    path = os.path.join(torch.hub.get_dir(), 'checkpoints', filename)
    if os.path.isfile(path):
        if hash_prefix and not _sha256(path).startswith(hash_prefix):
            raise RuntimeError(
                f'{path} is not the published {filename}: its sha256 does not '
                f'start with {hash_prefix}. It is probably truncated: delete '
                f'it and download it again from {url}')
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, path, hash_prefix)
    except OSError as err:  # no network, DNS, HTTP errors, timeouts
        raise FileNotFoundError(
            f'could not download {url} ({err}). Offline, download that file '
            f'on another machine and put it at {path} (the torch hub cache, '
            f'set by $TORCH_HOME); it is then used from there.') from err
    return path


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()
