# Jupyter Server configuration for this project, passed by `make lab` (`jupyter lab --config=jupyter_server_config.py`).
# nbdev's clean-on-save hook, as `nbdev_install_hooks` writes it to ~/.jupyter (but quiet on a new notebook): every
# notebook saved from JupyterLab is cleaned like `nbdev_clean` would (no execution counts, no cell metadata but `tags`,
# no memory addresses in outputs), as long as settings.ini says `jupyter_hooks = True`. nbdev finds settings.ini from
# the server's working directory, so start the server in the project root (`make lab` does).

def nbdev_clean_jupyter(**kwargs):
    try: from nbdev.clean import clean_jupyter
    except ModuleNotFoundError: return
    # nbdev cleans the notebook, then trusts the file on disk: a notebook saved for the first time is not on disk yet,
    # so that step fails after the cleaning is done (and Jupyter signs what it saves anyway).
    try: clean_jupyter(**kwargs)
    except FileNotFoundError: pass

c.ContentsManager.pre_save_hook = nbdev_clean_jupyter

# JupyterLab reads this file once more for its extension (and nbdev_install_hooks may have put the same hook in
# ~/.jupyter): setting the same hook again is expected, not worth a warning at every start.
import warnings
warnings.filterwarnings('ignore', message='Overriding existing pre_save_hook')
