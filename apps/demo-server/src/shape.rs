//! Move shape (`/hubs/shape`, and `MoveShapeHub` at `/signalr` for classic clients), after
//! ASP.NET's MoveShape sample: a client dragging the shape sends `UpdateModel(model)` as often as
//! it likes; the server keeps only the latest position and a broadcaster task sends it at most
//! every [`BROADCAST_INTERVAL`] as `UpdateShape(model)` to everyone except the client that moved
//! it last.
//!
//! Client → server: `UpdateModel(model)`, `GetShape()`, `Whoami()`.
//! Server → client: `UpdateShape(model)`.
//!
//! On a backplane each server broadcasts the moves of its own clients to the clients of every
//! server; `GetShape` answers the last position known here (the last move made on this server).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use signalr_redis::RedisBackplane;
use signalr_server::{Hub, HubCallerContext, HubContext, HubError};

use crate::stats::{Stats, lock};

/// Updates are broadcast at most this often (the ASP.NET sample's 40 ms, 25 per second).
pub const BROADCAST_INTERVAL: Duration = Duration::from_millis(40);
/// Width of the area the shape moves in, in CSS pixels.
pub const AREA_WIDTH: f64 = 800.0;
/// Height of the area the shape moves in.
pub const AREA_HEIGHT: f64 = 400.0;
/// Side of the (square) shape.
pub const SHAPE_SIZE: f64 = 100.0;

/// Where the shape is: its top-left corner inside the area, in CSS pixels.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct ShapeModel {
    /// Distance from the area's left edge.
    pub left: f64,
    /// Distance from the area's top edge.
    pub top: f64,
}

impl ShapeModel {
    /// The model moved inside the area (non-finite numbers become 0).
    pub fn clamped(self) -> Self {
        let clamp = |v: f64, max: f64| {
            if v.is_finite() {
                v.clamp(0.0, max)
            } else {
                0.0
            }
        };
        ShapeModel {
            left: clamp(self.left, AREA_WIDTH - SHAPE_SIZE),
            top: clamp(self.top, AREA_HEIGHT - SHAPE_SIZE),
        }
    }
}

#[derive(Debug)]
struct Latest {
    model: ShapeModel,
    moved_by: Option<String>,
    pending: bool,
}

/// The shape, shared by the hub and the broadcaster.
#[derive(Debug, Clone)]
pub struct Shape {
    latest: Arc<Mutex<Latest>>,
    stats: Arc<Stats>,
}

impl Shape {
    /// The shape in its starting place.
    pub fn new(stats: Arc<Stats>) -> Self {
        Shape {
            latest: Arc::new(Mutex::new(Latest {
                model: ShapeModel {
                    left: 40.0,
                    top: 40.0,
                },
                moved_by: None,
                pending: false,
            })),
            stats,
        }
    }

    fn update(&self, connection_id: &str, model: ShapeModel) {
        let mut latest = lock(&self.latest);
        latest.model = model.clamped();
        latest.moved_by = Some(connection_id.to_owned());
        latest.pending = true;
    }

    fn model(&self) -> ShapeModel {
        lock(&self.latest).model
    }

    /// Takes the position to broadcast, if it moved since the last broadcast.
    fn take_pending(&self) -> Option<(ShapeModel, Option<String>)> {
        let mut latest = lock(&self.latest);
        if !latest.pending {
            return None;
        }
        latest.pending = false;
        Some((latest.model, latest.moved_by.clone()))
    }

    /// Every [`BROADCAST_INTERVAL`]: sends the latest position, if it changed, to everyone but
    /// the client that moved it.
    pub async fn run_broadcaster(self, context: HubContext) {
        let mut tick = tokio::time::interval(BROADCAST_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some((model, moved_by)) = self.take_pending() else {
                continue;
            };
            let excluded: Vec<String> = moved_by.into_iter().collect();
            let recipients = context.connection_count().saturating_sub(excluded.len());
            match context
                .clients()
                .all_except(excluded)
                .send("UpdateShape", (model,))
                .await
            {
                Ok(()) => self.stats.sent("shape", recipients),
                Err(err) => tracing::warn!(%err, "shape position not sent"),
            }
        }
    }
}

fn shape(hub: &HubCallerContext) -> Result<Shape, HubError> {
    hub.state::<Shape>()
        .ok_or_else(|| HubError::new("The shape hub has no shape."))
}

/// The move-shape hub, on `backplane` when given.
pub fn shape_hub(shape_state: Shape, stats: Arc<Stats>, backplane: Option<&RedisBackplane>) -> Hub {
    crate::demo_hub("shape", "MoveShapeHub", &stats, backplane)
        .state(shape_state)
        .method(
            "UpdateModel",
            |hub: HubCallerContext, model: ShapeModel| async move {
                shape(&hub)?.update(hub.connection_id(), model);
                Ok::<_, HubError>(())
            },
        )
        .method("GetShape", |hub: HubCallerContext| async move {
            Ok::<_, HubError>(shape(&hub)?.model())
        })
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_stay_inside_the_area() {
        let inside = ShapeModel {
            left: 10.0,
            top: 20.0,
        };
        assert_eq!(inside.clamped(), inside);
        let outside = ShapeModel {
            left: -5.0,
            top: 1e9,
        };
        assert_eq!(
            outside.clamped(),
            ShapeModel {
                left: 0.0,
                top: AREA_HEIGHT - SHAPE_SIZE
            }
        );
        let nan = ShapeModel {
            left: f64::NAN,
            top: f64::INFINITY,
        };
        assert_eq!(
            nan.clamped(),
            ShapeModel {
                left: 0.0,
                top: 0.0
            }
        );
    }

    #[test]
    fn only_the_latest_position_is_broadcast() {
        let shape = Shape::new(Arc::default());
        assert!(shape.take_pending().is_none());
        for i in 0..10 {
            shape.update(
                "c1",
                ShapeModel {
                    left: f64::from(i),
                    top: 1.0,
                },
            );
        }
        shape.update(
            "c2",
            ShapeModel {
                left: 50.0,
                top: 60.0,
            },
        );
        let (model, by) = shape.take_pending().expect("a pending update");
        assert_eq!(
            model,
            ShapeModel {
                left: 50.0,
                top: 60.0
            }
        );
        assert_eq!(by.as_deref(), Some("c2"));
        assert!(shape.take_pending().is_none(), "sent once");
    }
}
