##! Example notice policy: e-mail every PacketCLIP brute-force notice.
##!
##! Load it after the package (``@load packetclip`` then
##! ``@load <path>/email-bruteforce``) and set :zeek:see:`Notice::mail_dest`
##! to the address that should receive the mails. Other PacketCLIP notices
##! are only logged to notice.log.

@load base/frameworks/notice

hook Notice::policy(n: Notice::Info)
	{
	if ( n$note == PacketCLIP::BruteForce )
		add n$actions[Notice::ACTION_EMAIL];
	}
