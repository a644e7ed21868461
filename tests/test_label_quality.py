"""Label quality (issue 8): depth auto, class-balanced sampling, pseudo-labels by reprojection, fusion."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from labelfield.annotate.fuse import FusedRenderer, fuse_probs
from labelfield.baselines.nearest_point import QUERY_EPS, LabelledPoints, depth_normals, unit_rgb
from labelfield.baselines.pseudo_labels import make_pseudo_labels
from labelfield.cameras import project, unproject_depth
from labelfield.errors import LabelfieldError
from labelfield.labels import make_sparse_labels
from labelfield.scene import Scene
from labelfield.synth.toy import toy_scene
from labelfield.train.config import FitConfig
from labelfield.train.dataset import RayDataset
from labelfield.train.depth_noise import DepthNoise
from labelfield.train.losses import semantic_loss
from labelfield.train.supervision import plan_supervision, resolve_depth_loss


@pytest.fixture(scope="module")
def scene() -> Scene:
    return toy_scene(16, 48, 36, seed=1)


def without_depth(scene: Scene) -> Scene:
    frames = [dataclasses.replace(f, arrays={k: v for k, v in f.arrays.items() if k != "depth"}) for f in scene.frames]
    return Scene(frames, scene.classes, None, "memory")


# --- depth auto -------------------------------------------------------------------------------------
def test_depth_auto_turns_on_exactly_when_depth_exists(scene):
    rgb_only = without_depth(scene)
    assert resolve_depth_loss("auto", scene) is True
    assert resolve_depth_loss("auto", rgb_only) is False
    assert resolve_depth_loss("off", scene) is False
    with pytest.raises(LabelfieldError, match="no depth"):
        resolve_depth_loss("on", rgb_only)
    assert FitConfig().depth_loss == "auto"
    # old config.json spelling (bool) still loads
    assert FitConfig.from_dict({"depth_loss": True}).depth_loss == "on"
    assert FitConfig.from_dict({"depth_loss": False}).depth_loss == "off"
    with pytest.raises(LabelfieldError):
        FitConfig.from_dict({"depth_loss": "maybe"})
    sparse = make_sparse_labels(scene, "every:8")
    sup = plan_supervision(FitConfig(pseudo_labels="off"), scene, sparse)
    assert sup.depth and "depth" in sup.message
    sup = plan_supervision(FitConfig(), rgb_only, sparse)
    assert not sup.depth and not sup.pseudo and "no depth" in sup.message


def test_depth_noise_is_deterministic_and_makes_holes(scene):
    d = scene.frames[0].load_depth()
    spec = DepthNoise.parse("holes=0.3,rel=0.02,blob=4")
    a, b, c = spec.apply(d, 0, 3), spec.apply(d, 0, 3), spec.apply(d, 1, 3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    known = d > 0
    hole = ((a == 0) & known).sum() / known.sum()
    assert 0.1 < hole < 0.5
    ok = (a > 0) & known
    assert (a[ok] / d[ok] - 1).std() == pytest.approx(0.02, rel=0.3)
    assert DepthNoise.parse(None) is None
    with pytest.raises(LabelfieldError):
        DepthNoise.parse("sparkle=3")


# --- class balance ----------------------------------------------------------------------------------
def test_class_balanced_sampling_returns_every_labelled_class(scene):
    sparse = make_sparse_labels(scene, "every:8")
    present = sorted(
        {int(c) for c in scene.classes.to_index(np.concatenate([s.ravel() for s in sparse.values()])) if c >= 0}
    )
    ds = RayDataset(scene, sparse, labelled_fraction=0.1, class_balance=1.0)
    assert ds.present_classes() == present and len(present) >= 4
    gen = torch.Generator().manual_seed(0)
    n_lab = round(64 * 0.1)
    assert n_lab >= len(present)
    for _ in range(20):
        b = ds.sample(64, gen)
        assert set(b.labels[:n_lab].tolist()) == set(present)
    # the old uniform sampling is still there (class_balance=0) and misses the rarest class in some batches
    counts = np.bincount(ds.labels[ds.labels >= 0].numpy(), minlength=max(present) + 1)
    rare = int(np.argmin(np.where(counts > 0, counts, counts.max() + 1)))
    uni = RayDataset(scene, sparse, labelled_fraction=0.1, class_balance=0.0)
    missed = sum(rare not in uni.sample(64, gen).labels[:n_lab].tolist() for _ in range(20))
    assert missed > 0


# --- pseudo-labels ----------------------------------------------------------------------------------
def brute_force_lookup(scene, src: int, t: int, rel_tol: float = 0.05) -> np.ndarray:
    """Per target pixel: back-project with its depth, project into the source, take the nearest source
    pixel's label if its depth agrees (a plain loop over pixels)."""
    ft, fs = scene.frames[t], scene.frames[src]
    dt, ds, ls = ft.load_depth(), fs.load_depth(), fs.load_labels()
    pts = unproject_depth(dt.astype(np.float64), ft.intrinsics, ft.c2w)
    out = np.zeros(dt.shape, np.int64)
    for v in range(dt.shape[0]):
        for u in range(dt.shape[1]):
            if dt[v, u] <= 0:
                continue
            uv, z = project(pts[v, u][None], fs.intrinsics, fs.c2w)
            su, sv = int(round(uv[0, 0])), int(round(uv[0, 1]))
            if z[0] > 0 and 0 <= su < ds.shape[1] and 0 <= sv < ds.shape[0] and ds[sv, su] > 0:
                if abs(ds[sv, su] - z[0]) <= rel_tol * z[0]:
                    out[v, u] = ls[sv, su]
    return out


def test_pseudo_labels_land_on_the_right_pixels(scene):
    sparse = make_sparse_labels(scene, "every:8")  # frames 0 and 8
    pseudo = make_pseudo_labels(scene, sparse, n_sources=1, targets=[1, 7])
    assert sorted(pseudo) == [1, 7]
    for t, src in ((1, 0), (7, 8)):
        lab, conf = pseudo[t]
        brute = brute_force_lookup(scene, src, t)
        both = (lab != 0) & (brute != 0)
        assert both.mean() > 0.5
        assert (lab[both] == brute[both]).mean() > 0.97
        gt = scene.frames[t].load_labels()
        assert (lab[lab != 0] == gt[lab != 0]).mean() > 0.97
        assert np.all(conf[lab != 0] > 0) and np.all(conf[lab == 0] == 0)
    # several sources: agreement raises confidence; labelled frames get none
    many = make_pseudo_labels(scene, sparse, n_sources=2)
    assert 0 not in many and 8 not in many and len(many) == 14
    lab, conf = many[4]
    assert conf.max() == pytest.approx(1.0) and 0 < conf[lab != 0].min() < 1.0


def test_dataset_trains_on_pseudo_labels_with_their_confidence(scene):
    sparse = make_sparse_labels(scene, "every:8")
    pseudo = make_pseudo_labels(scene, sparse, n_sources=2)
    ds = RayDataset(
        scene, sparse, labelled_fraction=0.25, pseudo=pseudo, pseudo_fraction=0.5, pseudo_min_confidence=0.5
    )
    b = ds.sample(200, torch.Generator().manual_seed(0))
    lab_part, ps_part = slice(0, 50), slice(50, 150)
    assert torch.all(b.label_weight[lab_part] == 1.0)
    assert torch.all(b.labels[ps_part] >= 0)
    assert torch.all((b.label_weight[ps_part] >= 0.5) & (b.label_weight[ps_part] <= 1.0))
    assert not set(b.frame[ps_part].tolist()) & set(sparse)
    # zero-weight labels contribute nothing
    logits = torch.randn(4, 3)
    loss, n = semantic_loss(logits, torch.tensor([0, 1, 2, -1]), weights=torch.zeros(4))
    assert float(loss) == 0.0 and int(n) == 3


# --- fusion -----------------------------------------------------------------------------------------
def test_fusion_is_never_worse_than_either_input():
    # 3 classes, 4 regions of 25 pixels: field sure+right | field unsure+wrong | field sure+wrong | no reprojection
    gt = np.repeat([0, 1, 2, 1], 25)
    probs = np.zeros((100, 3), np.float32)
    probs[:25] = [0.95, 0.03, 0.02]  # right, sure
    probs[25:50] = [0.45, 0.40, 0.15]  # wrong (0), unsure; truth 1
    probs[50:75] = [0.05, 0.90, 0.05]  # wrong (1), sure; truth 2
    probs[75:] = [0.1, 0.8, 0.1]  # right, no reprojection there
    pseudo = np.concatenate([np.full(25, 1), np.full(25, 1), np.full(25, 2), np.full(25, -1)])
    conf = np.concatenate([np.full(25, 0.45), np.full(25, 0.7), np.full(25, 1.0), np.zeros(25)])
    fused = fuse_probs(probs[None], pseudo[None], conf[None], trust=1.0)[0]
    assert np.allclose(fused.sum(-1), 1.0)
    acc = lambda pred: float((pred == gt).mean())
    a_field = acc(probs.argmax(-1))
    a_pseudo = acc(np.where(pseudo >= 0, pseudo, -1))
    a_fused = acc(fused.argmax(-1))
    assert a_fused >= max(a_field, a_pseudo)
    assert a_fused == 1.0


def test_fused_renderer_improves_a_wrong_field(scene):
    sparse = make_sparse_labels(scene, "every:4")
    C = scene.classes.num_classes

    def render_fn(intr, c2w):  # a field that has learnt nothing: uniform-ish, slightly favouring class 0
        H, W = intr.height, intr.width
        p = np.full((H, W, C), 1.0 / C, np.float32)
        p[..., 0] += 0.05
        return {
            "probs": p / p.sum(-1, keepdims=True),
            "depth": np.zeros((H, W), np.float32),
            "opacity": np.ones((H, W), np.float32),
            "rgb": np.zeros((H, W, 3), np.float32),
        }

    fused = FusedRenderer(render_fn, scene, scene.classes, sparse)
    t = 2
    f = scene.frames[t]
    gt = scene.classes.to_index(f.load_labels())
    before = (render_fn(f.intrinsics, f.c2w)["probs"].argmax(-1) == gt).mean()
    after = (fused(f.intrinsics, f.c2w)["probs"].argmax(-1) == gt).mean()
    assert fused.fused_frames == 1 and after > before + 0.3 and after > 0.9
    # labelled frames and unknown cameras are passed through untouched
    g = scene.frames[4]
    np.testing.assert_array_equal(fused(g.intrinsics, g.c2w)["probs"], render_fn(g.intrinsics, g.c2w)["probs"])
    assert fused.fused_frames == 1


# --- the nearest labelled 3D points, for pixels nothing reprojects to ------------------------------------
def test_nearest_points_vote_matches_brute_force():
    rng = np.random.default_rng(0)
    pts, ids = rng.uniform(-1, 1, (300, 3)), rng.choice([3, 7, 9], 300)
    q = rng.uniform(-1, 1, (50, 3))
    labels, conf = LabelledPoints(pts, ids).query(q, k=5)
    for j in range(len(q)):
        d = np.linalg.norm(pts - q[j], axis=1)
        near = np.argsort(d)[:5]
        votes = {c: sum(1.0 / max(d[n], 1e-3) for n in near if ids[n] == c) for c in (3, 7, 9)}
        best = max(votes, key=votes.get)
        assert labels[j] == best
        assert conf[j] == pytest.approx(votes[best] / sum(votes.values()), rel=1e-5)
    empty_labels, empty_conf = LabelledPoints(np.zeros((0, 3)), np.zeros(0)).query(q)
    assert (empty_labels == 0).all() and (empty_conf == 0).all()


def test_approximate_nearest_points_keep_almost_every_label():
    """eps > 0 (annotate's fill, `QUERY_EPS`): neighbours within (1 + eps) of the exact ones, so on clustered
    classes the vote stays that of the exact search almost everywhere; eps 0 is the exact search."""
    rng = np.random.default_rng(1)
    centres = rng.uniform(-1, 1, (12, 6))
    cls = rng.integers(0, 12, 20000)
    pts = centres[cls] + rng.normal(0, 0.25, (20000, 6))
    cloud = LabelledPoints(pts[:, :3], cls + 1, pts[:, 3:], 1.0)
    q = centres[rng.integers(0, 12, 3000)] + rng.normal(0, 0.25, (3000, 6))
    exact, conf = cloud.query(q[:, :3], normals=q[:, 3:])
    approx, conf_a = cloud.query(q[:, :3], normals=q[:, 3:], eps=QUERY_EPS)
    assert np.mean(exact == approx) > 0.97 and np.mean(exact != approx) > 0  # approximate, and close
    assert np.abs(conf - conf_a).mean() < 0.05
    np.testing.assert_array_equal(cloud.query(q[:, :3], normals=q[:, 3:], eps=0.0)[0], exact)


def test_normals_of_a_tilted_plane_face_the_camera_and_skip_holes():
    from labelfield.cameras import Intrinsics

    intr = Intrinsics(40.0, 40.0, 19.5, 14.5, 40, 30)
    c2w = np.eye(4)
    v, u = np.mgrid[0:30, 0:40].astype(np.float64)
    n = np.array([0.3, -0.4, -1.0]) / np.linalg.norm([0.3, -0.4, -1.0])  # plane n . X = -2, seen from the origin
    rays = np.stack([(u - 19.5) / 40, (v - 14.5) / 40, np.ones_like(u)], -1)
    depth = -2.0 / (rays @ n)  # z-depth of the plane along each pixel's ray (z = 1 rays)
    depth[10:13, 20:23] = 0.0  # a hole
    got = depth_normals(unproject_depth(depth, intr, c2w), depth, c2w, step=1)
    ok = np.linalg.norm(got, axis=-1) > 0
    assert not ok[11, 21] and not ok[9, 21] and ok[5, 5] and ok.mean() > 0.9  # a hole and its 4-neighbours
    assert np.allclose(got[ok], n, atol=1e-6)  # facing the camera: n . (camera - X) > 0


def test_normal_weighted_vote_prefers_surfaces_facing_the_same_way():
    # A room corner: labelled wall (class 2, normal +x) up to the corner at x = 0, labelled ceiling (class 3,
    # normal -z) further away. A query on the ceiling next to the wall is nearer to the wall's points.
    g = np.linspace(0.0, 1.0, 11)
    wall = np.stack(np.meshgrid([0.0], g, g - 1.0, indexing="ij"), -1).reshape(-1, 3)  # x = 0, z in [-1, 0]
    ceil = np.stack(np.meshgrid(g + 1.0, g, [0.0], indexing="ij"), -1).reshape(-1, 3)  # z = 0, x in [1, 2]
    pts = np.concatenate([wall, ceil])
    ids = np.r_[np.full(len(wall), 2), np.full(len(ceil), 3)]
    normals = np.r_[np.tile([1.0, 0, 0], (len(wall), 1)), np.tile([0, 0, -1.0], (len(ceil), 1))]
    q, qn = np.array([[0.3, 0.5, 0.0]]), np.array([[0.0, 0.0, -1.0]])
    assert LabelledPoints(pts, ids).query(q, k=8)[0][0] == 2  # by position: the wall
    by_normal = LabelledPoints(pts, ids, normals, normal_weight=1.0)
    assert by_normal.query(q, k=8, normals=qn)[0][0] == 3
    # the search is the plain vote in (xyz, w n): brute force over the 6-D keys
    keys, qk = np.c_[pts, normals], np.c_[q, qn]
    near = np.argsort(np.linalg.norm(keys - qk, axis=1))[:8]
    d = np.linalg.norm(keys[near] - qk, axis=1)
    share = (1 / np.maximum(d, 1e-3))[ids[near] == 3].sum() / (1 / np.maximum(d, 1e-3)).sum()
    assert by_normal.query(q, k=8, normals=qn)[1][0] == pytest.approx(share, rel=1e-5)


def test_colour_weighted_vote_keeps_a_rug_apart_from_the_floor():
    # A labelled floor (class 1, grey) around a labelled rug patch (class 21, red), all at z = 0 facing up. A red
    # query point on the floor just outside the labelled rug (the rug's unseen edge) is nearer to floor points.
    g = np.linspace(-1.0, 1.0, 41)
    xy = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    rug = (np.abs(xy) < 0.3).all(1)
    pts = np.c_[xy, np.zeros(len(xy))]
    ids = np.where(rug, 21, 1)
    colors = np.where(rug[:, None], [0.8, 0.1, 0.1], [0.5, 0.5, 0.5])
    q, qc = np.array([[0.42, 0.0, 0.0]]), np.array([[0.78, 0.12, 0.1]])
    assert LabelledPoints(pts, ids).query(q, k=8)[0][0] == 1
    assert LabelledPoints(pts, ids, colors=colors, color_weight=4.0).query(q, k=8, colors=qc)[0][0] == 21
    # normals and colours together: the same surface orientation, so the colour decides
    both = LabelledPoints(pts, ids, np.tile([0, 0, 1.0], (len(pts), 1)), 0.5, colors, 4.0)
    assert both.query(q, k=8, normals=np.array([[0, 0, 1.0]]), colors=qc)[0][0] == 21


def test_labelled_points_label_another_view_of_the_same_surfaces(scene):
    sparse = make_sparse_labels(scene, "every:4")
    cloud = LabelledPoints.from_frames(scene, sparse, {i: scene.frames[i].load_depth() for i in sparse})
    assert 0 < len(cloud.points) <= sum(int((lab != 0).sum()) for lab in sparse.values())
    f = scene.frames[2]
    d, gt = f.load_depth(), f.load_labels()
    ok = (d > 0) & (gt != 0)
    labels, conf = cloud.query(unproject_depth(d.astype(np.float64), f.intrinsics, f.c2w)[ok])
    assert (labels == gt[ok]).mean() > 0.9 and conf.min() >= 0 and conf.max() <= 1
    capped = LabelledPoints.from_frames(scene, sparse, {i: scene.frames[i].load_depth() for i in sparse}, 100)
    assert len(capped.points) <= 100 + len(sparse)  # a stride per frame: at most one point over per frame
    depth = {i: scene.frames[i].load_depth() for i in sparse}
    oriented = LabelledPoints.from_frames(scene, sparse, depth, normal_weight=0.5, color_weight=4.0)
    xyz = unproject_depth(d.astype(np.float64), f.intrinsics, f.c2w)
    rgb = unit_rgb(f.load_rgb())
    labels_n, _ = oriented.query(xyz[ok], normals=depth_normals(xyz, d, f.c2w)[ok], colors=rgb[ok])
    assert (labels_n == gt[ok]).mean() > 0.9


def test_fused_renderer_labels_pixels_nothing_reprojects_to(scene):
    sparse = make_sparse_labels(scene, "every:4")
    C = scene.classes.num_classes

    def render_fn(intr, c2w):  # a field that has learnt nothing
        H, W = intr.height, intr.width
        return {"probs": np.full((H, W, C), 1.0 / C, np.float32), "depth": np.zeros((H, W), np.float32)}

    f = scene.frames[2]
    gt = scene.classes.to_index(f.load_labels())
    # rel_tol=0: every reprojected splat fails the z-test, so only the nearest labelled points can label t
    acc = {
        k: (
            FusedRenderer(render_fn, scene, scene.classes, sparse, rel_tol=0.0, unseen_k=k, refine=None)(
                f.intrinsics, f.c2w
            )["probs"].argmax(-1)
            == gt
        ).mean()
        for k in (0, 16)
    }
    assert acc[0] < 0.5 and acc[16] > 0.9, acc


def test_pseudo_label_depth_tolerance_is_used_and_checked(scene):
    sparse = make_sparse_labels(scene, "every:4")
    loose = plan_supervision(FitConfig(pseudo_labels="on", pseudo_depth_tol=0.5), scene, sparse).pseudo
    tight = plan_supervision(FitConfig(pseudo_labels="on", pseudo_depth_tol=1e-6), scene, sparse).pseudo
    n = {k: sum(int((lab != 0).sum()) for lab, _ in p.values()) for k, p in (("loose", loose), ("tight", tight))}
    assert n["tight"] < n["loose"], n  # a z-test that nothing passes leaves only exact matches
    with pytest.raises(LabelfieldError, match="pseudo-depth-tol"):
        plan_supervision(FitConfig(pseudo_labels="on", pseudo_depth_tol=0.0), scene, sparse)
