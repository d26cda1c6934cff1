//! A scrape's body as the pieces its collectors encoded (`exposition`), sent one after the other
//! with the whole body's `Content-Length`: joining 16 MB of pieces into one buffer would copy
//! them all and fault in as many fresh pages again.

use std::{
    collections::VecDeque,
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::body::Bytes;
use http_body::{Frame, SizeHint};

/// The pieces of one body, shared by the scrapes that reuse it.
#[derive(Clone)]
pub struct Pieces(Arc<[Bytes]>);

impl Pieces {
    /// `texts` as one body whose memory goes back to the system once no scrape holds any of it
    /// (`heap::pieces_released_on_drop`). Empty pieces are left out.
    pub fn released_on_drop(texts: Vec<String>) -> Self {
        let texts = texts.into_iter().filter(|text| !text.is_empty()).collect();
        Self(crate::heap::pieces_released_on_drop(texts).into())
    }

    pub fn into_body(self) -> axum::body::Body {
        let len = self.0.iter().map(|piece| piece.len() as u64).sum();
        axum::body::Body::new(Sent { unsent: self.0.iter().cloned().collect(), len })
    }
}

/// The pieces not sent yet, and their length.
struct Sent {
    unsent: VecDeque<Bytes>,
    len: u64,
}

impl http_body::Body for Sent {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let piece = self.unsent.pop_front();
        if let Some(piece) = &piece {
            self.len -= piece.len() as u64;
        }
        Poll::Ready(piece.map(|piece| Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.unsent.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    #[tokio::test]
    async fn the_pieces_arrive_in_order_as_one_body_of_their_exact_length() {
        let pieces = Pieces::released_on_drop(vec![
            "a 1\n".into(),
            String::new(),
            "b 2\n".repeat(3),
            "# EOF\n".into(),
        ]);
        let shared = pieces.clone();
        let body = pieces.into_body();
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(22));
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes, "a 1\nb 2\nb 2\nb 2\n# EOF\n");
        // A scrape that reused the body gets it whole too.
        assert_eq!(shared.into_body().collect().await.unwrap().to_bytes().len(), 22);
    }
}
