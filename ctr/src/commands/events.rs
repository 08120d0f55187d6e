//! `bctr events`: the daemon's events as ctr prints them, one a line:
//! `<time> <namespace> <topic> <event as JSON>`.

use std::io::Write;

use bctr::gojson::go_time_string;
use bctr::protojson::decode_event;
use berth_api::events::{events_client::EventsClient, SubscribeRequest};

use super::{CmdError, Ctx};

pub async fn run(ctx: &Ctx, filters: Vec<String>) -> Result<(), CmdError> {
    let mut stream = EventsClient::new(ctx.channel.clone())
        .subscribe(ctx.request(SubscribeRequest { filters }))
        .await?
        .into_inner();
    while let Some(e) = stream.message().await? {
        let json = match &e.event {
            None => String::new(),
            Some(any) => match decode_event(any) {
                Some(Ok(j)) => j.compact(),
                Some(Err(err)) => {
                    eprintln!("bctr: warning: cannot unmarshal an event from Any: {err}");
                    continue;
                }
                None => {
                    eprintln!(
                        "bctr: warning: cannot unmarshal an event from Any: type with url {} not registered",
                        any.type_url
                    );
                    continue;
                }
            },
        };
        let mut out = std::io::stdout().lock();
        let line = format!(
            "{} {} {} {json}\n",
            go_time_string(e.timestamp.as_ref()),
            e.namespace,
            e.topic
        );
        if out
            .write_all(line.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            return Ok(());
        }
    }
    Ok(())
}
