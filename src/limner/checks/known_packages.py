"""Well-known PyPI distributions, by the name code imports them as.

Offline on purpose: the import check never asks PyPI (that would leak the
code's imports and, for a hallucinated name, tell a squatter it is wanted).
A name found here but not installed is a real package that is missing; a
name found nowhere may be hallucinated.

Two groups: imports whose distribution has another name (the usual trap:
`pip install yaml` installs nothing useful) and popular ones whose names
agree.
"""
from __future__ import annotations

RENAMED = {
    "yaml": "PyYAML",
    "cv2": "opencv-python",
    "sklearn": "scikit-learn",
    "skimage": "scikit-image",
    "PIL": "Pillow",
    "bs4": "beautifulsoup4",
    "dateutil": "python-dateutil",
    "dotenv": "python-dotenv",
    "jwt": "PyJWT",
    "magic": "python-magic",
    "serial": "pyserial",
    "usb": "pyusb",
    "Crypto": "pycryptodome",
    "Cryptodome": "pycryptodomex",
    "OpenSSL": "pyOpenSSL",
    "attr": "attrs",
    "docx": "python-docx",
    "pptx": "python-pptx",
    "fitz": "PyMuPDF",
    "gi": "PyGObject",
    "win32api": "pywin32",
    "win32con": "pywin32",
    "zmq": "pyzmq",
    "telegram": "python-telegram-bot",
    "discord": "discord.py",
    "MySQLdb": "mysqlclient",
    "psycopg2": "psycopg2-binary",
    "multipart": "python-multipart",
    "slugify": "python-slugify",
    "socks": "PySocks",
    "wx": "wxPython",
    "kafka": "kafka-python",
    "ldap": "python-ldap",
    "nacl": "PyNaCl",
    "git": "GitPython",
    "Bio": "biopython",
    "mpl_toolkits": "matplotlib",
    "pkg_resources": "setuptools",
    "google": "protobuf",  # also google-cloud-*, google-api-python-client
    "googleapiclient": "google-api-python-client",
    "grpc": "grpcio",
    "jose": "python-jose",
    "lxml": "lxml",
    "markdown": "Markdown",
    "memcache": "python-memcached",
    "sentencepiece": "sentencepiece",
    "speech_recognition": "SpeechRecognition",
    "tensorflow_hub": "tensorflow-hub",
    "typing_extensions": "typing-extensions",
    "websocket": "websocket-client",
    "xdist": "pytest-xdist",
    "Levenshtein": "Levenshtein",
    "llama_cpp": "llama-cpp-python",
    "tree_sitter": "tree-sitter",
    "sentence_transformers": "sentence-transformers",
    "huggingface_hub": "huggingface-hub",
    "pydantic_settings": "pydantic-settings",
    "faiss": "faiss-cpu",
    "jinja2": "Jinja2",
    "markupsafe": "MarkupSafe",
    "pymysql": "PyMySQL",
    "github": "PyGithub",
    "Xlib": "python-xlib",
    "pythoncom": "pywin32",
    "dns": "dnspython",
    "engineio": "python-engineio",
    "socketio": "python-socketio",
    "ruamel": "ruamel.yaml",
    "OpenGL": "PyOpenGL",
    "pygments": "Pygments",
    "sqlalchemy": "SQLAlchemy",
    "flask_sqlalchemy": "Flask-SQLAlchemy",
    "flask_cors": "Flask-Cors",
    "flask_login": "Flask-Login",
    "rest_framework": "djangorestframework",
    "tomli_w": "tomli-w",
    "charset_normalizer": "charset-normalizer",
    "google_auth_oauthlib": "google-auth-oauthlib",
}

SAME_NAME = frozenset("""
aiohttp aiofiles alembic anthropic anyio apscheduler arrow asyncpg attrs
black boto3 botocore bottle cachetools celery certifi cffi chardet click
colorama coloredlogs cryptography cython dask datasets deap decorator
diskcache django docker docopt elasticsearch emoji fabric faker fastapi
filelock flake8 flask fsspec gensim gevent gradio greenlet gunicorn h5py
httpx httpcore humanize hypothesis idna imageio iniconfig ipython isort
jax jieba jmespath joblib jsonschema keras kiwisolver langchain librosa
lightgbm loguru lz4 matplotlib mock more_itertools msgpack mypy nltk
networkx nose numba numpy oauthlib openai openpyxl orjson packaging pandas
paramiko pathspec pendulum pexpect pika platformdirs plotly pluggy polars
prompt_toolkit psutil py pyarrow pyasn1 pycparser pydantic
pyglet pygame pymongo pyparsing pyperclip pytest pytz qrcode rdflib
redis regex reportlab requests rich rsa s3transfer scipy scrapy seaborn
selenium setuptools shapely simplejson six smart_open spacy
sqlparse statsmodels streamlit sympy tabulate tenacity tensorflow termcolor
tiktoken tokenizers toml tomli toolz torch torchaudio torchvision tornado
tqdm transformers trio twisted typer tzdata tzlocal ujson urllib3 uvicorn
virtualenv watchdog websockets werkzeug wheel wrapt xgboost xlrd xlsxwriter
xmltodict yarl zipp
""".split())


def _norm(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


# Distribution names people mistake for import names (`import beautifulsoup4`).
DIST_TO_IMPORT = {_norm(dist): imp for imp, dist in RENAMED.items() if _norm(dist) != _norm(imp)}


def distribution_for(import_name: str) -> str | None:
    """The PyPI distribution that provides `import_name`, when limner knows it."""
    if import_name in RENAMED:
        return RENAMED[import_name]
    return import_name if import_name in SAME_NAME else None


def import_for_distribution(name: str) -> str | None:
    """`beautifulsoup4` -> `bs4`: the import name of a mistaken distribution name."""
    return DIST_TO_IMPORT.get(_norm(name))
