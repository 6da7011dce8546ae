//! What the remuxing pipeline hands the ladder: each packet it packaged, with whether a
//! source segment began at it, through a bounded queue it never waits on. When the ladder
//! cannot keep up the queue fills, packets are dropped here, and the ladder gets the next
//! keyframe (with any configuration it missed) once there is room again: the source goes
//! on exactly as fast as without a ladder.

use crate::media::Frame;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use std::sync::mpsc::{SyncSender, TrySendError};

/// Packets the ladder may be behind by: about two seconds of 30 fps video with its audio.
pub const TAP_QUEUE: usize = 160;

/// One thing the source pipeline packaged.
#[derive(Debug)]
pub enum Tapped {
    VideoConfig(Bytes),
    AudioConfig(Bytes),
    Video {
        /// Milliseconds on the broadcast's timeline (after the shift of a return).
        dts: i64,
        pts: i64,
        keyframe: bool,
        data: Bytes,
        arrived: DateTime<Utc>,
        /// The source segment that begins at this packet.
        begins: Option<u64>,
    },
    Audio(Frame),
}

/// The source pipeline's end of the queue.
pub struct Tap {
    queue: SyncSender<Tapped>,
    /// Packets were dropped: send nothing more until a keyframe.
    lost: bool,
    /// Configurations that found the queue full, sent again before that keyframe.
    missed: Vec<Tapped>,
    pub dropped: u64,
}

impl Tap {
    pub fn new(queue: SyncSender<Tapped>) -> Tap {
        Tap {
            queue,
            lost: false,
            missed: Vec::new(),
            dropped: 0,
        }
    }

    /// Offers `event`; false if the queue was full (or the ladder is gone).
    fn offer(&mut self, event: Tapped) -> bool {
        match self.queue.try_send(event) {
            Ok(()) => true,
            Err(TrySendError::Full(event)) => {
                if !self.lost {
                    tracing::warn!("the ladder is behind: dropping its input until a keyframe");
                }
                self.lost = true;
                self.dropped += 1;
                if matches!(event, Tapped::VideoConfig(_) | Tapped::AudioConfig(_)) {
                    self.missed.push(event);
                }
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    pub fn video_config(&mut self, avcc: &Bytes) {
        self.offer(Tapped::VideoConfig(avcc.clone()));
    }

    pub fn audio_config(&mut self, asc: &Bytes) {
        self.offer(Tapped::AudioConfig(asc.clone()));
    }

    pub fn video(
        &mut self,
        dts: i64,
        pts: i64,
        keyframe: bool,
        data: Bytes,
        arrived: DateTime<Utc>,
        begins: Option<u64>,
    ) {
        if self.lost {
            if !keyframe {
                self.dropped += 1;
                return;
            }
            for missed in std::mem::take(&mut self.missed) {
                if !self.offer(missed) {
                    return;
                }
            }
        }
        let sent = self.offer(Tapped::Video {
            dts,
            pts,
            keyframe,
            data,
            arrived,
            begins,
        });
        if sent && self.lost {
            self.lost = false;
        }
    }

    pub fn audio(&mut self, dts: i64, data: Bytes, arrived: DateTime<Utc>) {
        if self.lost {
            self.dropped += 1;
            return;
        }
        self.offer(Tapped::Audio(Frame {
            dts,
            pts: dts,
            keyframe: true,
            data,
            arrived,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(tap: &mut Tap, n: i64, keyframe: bool) {
        tap.video(n, n, keyframe, Bytes::new(), Utc::now(), None);
    }

    #[test]
    fn a_full_queue_drops_until_a_keyframe_and_resends_missed_configuration() {
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        let mut tap = Tap::new(tx);
        video(&mut tap, 0, true);
        video(&mut tap, 1, false);
        // Full: this frame and the configuration are dropped, never waited for.
        video(&mut tap, 2, false);
        tap.video_config(&Bytes::from_static(b"avcc-2"));
        assert_eq!(tap.dropped, 2);
        let drained: Vec<Tapped> = rx.try_iter().collect();
        assert_eq!(drained.len(), 2);
        // Room again, but not a keyframe: still dropped.
        video(&mut tap, 3, false);
        assert!(rx.try_recv().is_err());
        video(&mut tap, 4, true);
        let got: Vec<Tapped> = rx.try_iter().collect();
        assert!(matches!(&got[0], Tapped::VideoConfig(c) if c.as_ref() == b"avcc-2"));
        assert!(matches!(
            &got[1],
            Tapped::Video {
                dts: 4,
                keyframe: true,
                ..
            }
        ));
        video(&mut tap, 5, false);
        assert!(matches!(rx.try_recv(), Ok(Tapped::Video { dts: 5, .. })));
    }
}
