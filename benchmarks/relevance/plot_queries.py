"""Hand-written plot descriptions of well-known anime: the `plot-en` query set's data.

A user who cannot recall a title describes the story instead ("the one where a boy has to pilot a giant
robot against angels"). These queries were written by hand, in English, from general knowledge of the
works -- their premise, characters and what viewers remember about them -- NOT from the catalogue's text:
no synopsis was read or copied, so a system cannot score by matching the indexed summary word for word.
They vary on purpose: short and vague, long and detailed, a few with the typos people make.

Rules every query keeps (checked by `judgements.plot_leaks` in the builder and by the tests):
- it names neither the work nor any of its aliases: no normalised title or synonym of a judged entry
  occurs in it as whole words;
- it uses no distinctive word of the work's own titles (a character name that is also in the title,
  "Frieren", "Lelouch", or a word such as "titan" or "alchemist"); only the ordinary words listed in
  `ORDINARY_TITLE_WORDS` may appear in both, because a description cannot avoid them ("castle", "girls").

`anime_ids` lists the work's main entry first (the one the description was written for; `year` is its
year, a check that the id is that work), then, by hand, sequels, remakes and films the title-stem
heuristic (`titles.stem`) does not join to it: a user asking for the Evangelion plot is well served by the
TV series, the 1997 films or the Rebuild films alike. The builder adds every entry of their franchises.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PlotQuery:
    """One description and the work it describes."""

    text: str
    # The main entry first, then siblings the franchise stems miss (bangumi ids: "bangumi-<subject>").
    anime_ids: tuple[str, ...]
    # For readers of this file and its tests only: never part of a query.
    work: str
    year: int


# Ordinary words a description may share with the titles of its work's franchise ("a walking castle",
# "two girls", "ninja"); any other shared word of 3+ letters fails the checks.
ORDINARY_TITLE_WORDS = frozenset(
    {
        "about",
        "and",
        "castle",
        "demon",
        "distance",
        "first",
        "genius",
        "girl",
        "girls",
        "guitar",
        "hero",
        "high",
        "human",
        "island",
        "ninja",
        "school",
        "science",
        "short",
        "sky",
        "stories",
        "system",
        "the",
        "time",
        "wolf",
        "world",
    }
)


def _ids(*subjects: int) -> tuple[str, ...]:
    return tuple(f"bangumi-{s}" for s in subjects)


PLOT_QUERIES: tuple[PlotQuery, ...] = (
    PlotQuery(
        "a teenage boy is forced by his cold father to pilot a giant bio-machine and fight mysterious "
        "angels that attack the city",
        _ids(265, 6048, 6049, 39923, 772, 3302, 22505, 29883),
        "Neon Genesis Evangelion",
        1995,
    ),
    PlotQuery(
        "a high school student finds a notebook that kills anyone whose name is written in it",
        _ids(1773, 35989, 35990),
        "Death Note",
        2006,
    ),
    PlotQuery(
        "humanity hides behind enormous walls from giant naked man-eating humanoids and a boy swears "
        "revenge after one of them eats his mother",
        _ids(55770, 110049, 221781, 310656, 508708),
        "Attack on Titan",
        2013,
    ),
    PlotQuery(
        "a sulky ten year old girl gets stuck working in a bathhouse for spirits after her parents are "
        "turned into pigs",
        _ids(311),
        "Spirited Away",
        2001,
    ),
    PlotQuery(
        "elf mage who outlived the hero party she travelled with sets out again to understand the humans "
        "she lost",
        _ids(400602),
        "Frieren: Beyond the Journey's End",
        2023,
    ),
    PlotQuery(
        "two brothers try to bring their dead mother back with forbidden alchemy, the older one loses an "
        "arm and a leg and the younger one's soul ends up bound to a suit of armor",
        _ids(1428, 315),
        "Fullmetal Alchemist",
        2009,
    ),
    PlotQuery(
        "bounty hunters drifting through space in 2071 on a shabby ship, jazz soundtrack, the laid back "
        "lead used to be in a crime syndicate",
        _ids(253),
        "Cowboy Bebop",
        1998,
    ),
    PlotQuery(
        "self-proclaimed mad scientist accidentally turns a microwave into a machine that sends text "
        "messages to the past",
        _ids(10380, 23119),
        "Steins;Gate",
        2011,
    ),
    PlotQuery(
        "a boy in tokyo and a girl from a small mountain town keep swapping bodies in their sleep while a "
        "comet is about to pass",
        _ids(160209),
        "Your Name.",
        2016,
    ),
    PlotQuery(
        "anime with the giant cat bus",
        _ids(302),
        "My Neighbor Totoro",
        1988,
    ),
    PlotQuery(
        "after his family is slaughtered by a demon a kind boy trains as a swordsman to turn his little "
        "sister, now a demon herself, back into a human",
        _ids(245665, 291494, 294137, 317002, 322102, 349032, 349033, 422759, 501958),
        "Demon Slayer: Kimetsu no Yaiba",
        2019,
    ),
    PlotQuery(
        "quiet wandering man with white hair who helps poeple troubled by strange primitive lifeforms in "
        "the japanese countryside, slow and atmospheric",
        _ids(340, 106207, 88473),
        "Mushishi",
        2005,
    ),
    PlotQuery(
        "exiled prince gains the power to command anyone who meets his eye and leads a masked uprising "
        "against the empire that conquered japan",
        _ids(793, 99926, 99952),
        "Code Geass: Lelouch of the Rebellion",
        2006,
    ),
    PlotQuery(
        "dark magical girl show where a cute white creature offers girls any wish in exchange for "
        "fighting witches",
        _ids(9717, 334105),
        "Puella Magi Madoka Magica",
        2011,
    ),
    PlotQuery(
        "four high school girls in the light music club who drink tea and eat cake more than they practice",
        _ids(1424),
        "K-On!",
        2009,
    ),
    PlotQuery(
        "delinquent meets a shy girl repeating her final year and helps her restart the drama club, the "
        "second half is about growing up and becoming a father",
        _ids(51, 876),
        "Clannad",
        2007,
    ),
    PlotQuery(
        "short kid who can jump really high joins his high school volleyball team together with the "
        "genius setter who beat him in middle school",
        _ids(84171, 123136, 128952, 269918, 295421),
        "Haikyu!!",
        2014,
    ),
    PlotQuery(
        "boy with a fishing rod leaves his island to pass a deadly licence exam and find the father who "
        "left him",
        _ids(21032, 1704, 10357, 10358, 44705, 80607),
        "Hunter x Hunter",
        2011,
    ),
    PlotQuery(
        "rubber pirate looking for the legendary treasure",
        _ids(
            975,
            110526,
            137580,
            144846,
            162047,
            20523,
            217886,
            2462,
            256278,
            258349,
            358803,
            50513,
            518519,
            518603,
            5393,
            90390,
            90391,
            90792,
        ),
        "One Piece",
        1999,
    ),
    PlotQuery(
        "orphan ninja with a nine-tailed fox sealed inside him dreams of becoming the leader of his village",
        _ids(3425, 2782, 16528, 16608, 22444, 38081, 4668),
        "Naruto",
        2002,
    ),
    PlotQuery(
        "comedy in an edo era japan taken over by aliens, a lazy silver haired swordsman runs an odd "
        "jobs business, tons of parody",
        _ids(247, 161710, 218740, 218963, 232884, 240811, 309002, 4475, 453179, 47576, 480096, 500060, 67217),
        "Gintama",
        2006,
    ),
    PlotQuery(
        "orphan girl climbs down into a giant pit full of monsters to find her mother, with a robot boy; "
        "cute art but really brutal",
        _ids(203526),
        "Made in Abyss",
        2017,
    ),
    PlotQuery(
        "a former child soldier with metal arms becomes a ghostwriter of letters to learn what the words "
        "'i love you' meant",
        _ids(183878),
        "Violet Evergarden",
        2018,
    ),
    PlotQuery(
        "a secret agent has to put together a pretend household for his mission: the little girl he "
        "adopts reads minds and his new wife is an assassin, and none of them knows the others' secrets",
        _ids(329906, 411428),
        "Spy x Family",
        2022,
    ),
    PlotQuery(
        "broke devil hunter in debt to the yakuza merges with his pet devil dog and grows blades out of "
        "his head and arms",
        _ids(321885),
        "Chainsaw Man",
        2022,
    ),
    PlotQuery(
        "a high schooler swallows a cursed finger, becomes host to the king of curses and joins a school "
        "for sorcerers",
        _ids(294993),
        "Jujutsu Kaisen",
        2020,
    ),
    PlotQuery(
        "shy middle schooler with overwhelming psychic powers works for a fake spirit medium and tries to "
        "keep his emotions from exploding",
        _ids(158316, 228109, 279700),
        "Mob Psycho 100",
        2016,
    ),
    PlotQuery(
        "red motorcycle, biker gang in neo tokyo, a kid gets psychic powers from a government experiment",
        _ids(5118),
        "Akira",
        1988,
    ),
    PlotQuery(
        "a cyborg security agent with a fully artificial body hunts a hacker known as the puppet master and "
        "wonders whether she is still human",
        _ids(237, 324, 125807),
        "Ghost in the Shell",
        1995,
    ),
    PlotQuery(
        "a cursed young prince travels west and is caught in a war between an iron-making town and the "
        "animal gods of the forest, where a girl raised by wolves fights",
        _ids(310),
        "Princess Mononoke",
        1997,
    ),
    PlotQuery(
        "a young hatmaker is turned into an old woman by a witch's curse and becomes the cleaning lady of a "
        "vain wizard's walking castle",
        _ids(312),
        "Howl's Moving Castle",
        2004,
    ),
    PlotQuery(
        "painfully shy girl who only plays guitar alone in her room gets dragged into a band",
        _ids(328609),
        "Bocchi the Rock!",
        2022,
    ),
    PlotQuery(
        "a doctor is reborn as the child of the pop idol he worshipped, then it turns into a showbiz "
        "revenge thriller",
        _ids(386809, 443428, 517057),
        "Oshi no Ko",
        2023,
    ),
    PlotQuery(
        "guy sumoned to a fantasy world returns to a checkpoint every time he dies and he dies a lot",
        _ids(140001, 261805, 278826, 296195, 316247),
        "Re:Zero - Starting Life in Another World",
        2016,
    ),
    PlotQuery(
        "ten thousand players trapped in a virtual reality mmorpg, if you die in the game you die for real",
        _ids(23686, 84866, 148099, 225604, 279457, 292238, 315375, 355004),
        "Sword Art Online",
        2012,
    ),
    PlotQuery(
        "a scary-looking but gentle boy and a tiny short-tempered girl help each other win over their "
        "crushes and end up falling for each other",
        _ids(909),
        "Toradora!",
        2008,
    ),
    PlotQuery(
        "childhood friends drifted apart after one of them drowned; years later her ghost appears to the "
        "shut-in boy and asks him to grant her wish",
        _ids(10440),
        "Anohana: The Flower We Saw That Day",
        2011,
    ),
    PlotQuery(
        "piano prodigy who cannot hear his own playing since his mother died meets a free-spirited violinist",
        _ids(100444),
        "Your Lie in April",
        2014,
    ),
    PlotQuery(
        "boy who bullied a deaf classmate in elementary school becomes an outcast himself and years later "
        "tries to make amends",
        _ids(117777),
        "A Silent Voice",
        2016,
    ),
    PlotQuery(
        "japanese brain surgeon in germany saves a little boy instead of the mayor, and the boy grows up "
        "into a serial killer the doctor has to stop",
        _ids(1959),
        "Monster",
        2004,
    ),
    PlotQuery(
        "viking boy joins the mercenary band of the man who killed his father only to duel him one day, "
        "later he ends up a slave on a farm",
        _ids(240386),
        "Vinland Saga",
        2019,
    ),
    PlotQuery(
        "all humans get petrified for thousands of years and a teenage genius rebuilds civilization from "
        "scratch with science",
        _ids(266794, 363101, 508003),
        "Dr. Stone",
        2019,
    ),
    PlotQuery(
        "struggling manga artist keeps getting sent back a few minutes in time, then eighteen years back "
        "into his childhood to stop the kidnapping of a classmate",
        _ids(137722),
        "Erased",
        2016,
    ),
    PlotQuery(
        "future japan where a system scans your mind to measure how likely you are to commit a crime and "
        "police guns only fire at latent criminals",
        _ids(37685, 103906, 239923, 239924, 239926, 296308),
        "Psycho-Pass",
        2012,
    ),
    PlotQuery(
        "pacifist gunslinger in a red coat with a huge bounty on his head on a desert planet",
        _ids(7159, 388170, 10782, 426100),
        "Trigun",
        1998,
    ),
    PlotQuery(
        "a wild breakdancing swordsman, a stoic ronin and a girl looking for the man who smells of "
        "sunflowers, hip hop soundtrack",
        _ids(254),
        "Samurai Champloo",
        2004,
    ),
    PlotQuery(
        "surreal gag comedy where a robot girl has a wind-up key on her back and is looked after by a "
        "tiny kid professor",
        _ids(9912),
        "Nichijou",
        2011,
    ),
    PlotQuery(
        "otaku high school girls chatting about nothing, like which end of a chocolate cornet to eat first",
        _ids(276),
        "Lucky Star",
        2007,
    ),
    PlotQuery(
        "eccentric high school girl starts a club to find aliens, time travelers and espers without knowing "
        "she can rewrite reality, told by the sarcastic boy she drags along",
        _ids(485, 1606, 3375),
        "The Melancholy of Haruhi Suzumiya",
        2006,
    ),
    PlotQuery(
        "orphaned boy who can see yokai inherits his grandmother's ledger of spirit names and gives the "
        "names back, guarded by a fat lucky cat",
        _ids(259, 891, 12536, 23495, 174638, 203387, 443676),
        "Natsume's Book of Friends",
        2008,
    ),
    PlotQuery(
        "girls go camping in winter near mount fuji, cooking noodles and relaxing by the fire",
        _ids(207195),
        "Laid-Back Camp",
        2018,
    ),
    PlotQuery(
        "two geniuses on the student council have feelings for each other but are too proud to confess, "
        "so each schemes to make the other confess first",
        _ids(248175, 317613, 389474, 425211),
        "Kaguya-sama: Love Is War",
        2019,
    ),
    PlotQuery(
        "two childhood friends in a high school table tennis club, one expressionless and one cocky, with "
        "a rough sketchy art style",
        _ids(93739),
        "Ping Pong the Animation",
        2014,
    ),
    PlotQuery(
        "adventurers go back into a labyrinth to rescue a friend eaten by a dragon and survive by cooking "
        "the monsters they kill",
        _ids(395378),
        "Delicious in Dungeon",
        2024,
    ),
    PlotQuery(
        "street kid in night city gets a military grade implant, becomes a mercenary and falls for a "
        "netrunner girl",
        _ids(309311),
        "Cyberpunk: Edgerunners",
        2022,
    ),
    PlotQuery(
        "two guys from an underground village dig up a tiny mecha, break through to the surface and it "
        "escalates to robots the size of galaxies",
        _ids(770, 3995, 3996),
        "Gurren Lagann",
        2007,
    ),
    PlotQuery(
        "bald hero so strong he beats every enemy with a single hit and is bored out of his mind",
        _ids(127563),
        "One Punch Man",
        2015,
    ),
    PlotQuery(
        "college student gets the organs of a flesh-eating creature after a date gone wrong and becomes "
        "half human half monster",
        _ids(93714, 115292),
        "Tokyo Ghoul",
        2014,
    ),
    PlotQuery(
        "seven mages summon legendary heroes and fight to the death for a wish-granting holy grail, the "
        "grim war that came before the visual novel",
        _ids(10639),
        "Fate/Zero",
        2011,
    ),
    PlotQuery(
        "sad movie about a teenage boy and his little sister trying to survive alone after the firebombing "
        "of kobe in world war 2",
        _ids(382),
        "Grave of the Fireflies",
        1988,
    ),
    PlotQuery(
        "13 year old witch moves to a seaside town with her black cat and earns a living delivering "
        "packages on her broom",
        _ids(305),
        "Kiki's Delivery Service",
        1989,
    ),
    PlotQuery(
        "a girl with a glowing crystal pendant floats down from the sky and a boy from a mining town helps "
        "her look for a legendary floating island while pirates and the army chase them",
        _ids(298),
        "Castle in the Sky",
        1986,
    ),
    PlotQuery(
        "a young princess flies a glider over a toxic fungal jungle and befriends giant insects long after "
        "civilization collapsed",
        _ids(295),
        "Nausicaä of the Valley of the Wind",
        1984,
    ),
    PlotQuery(
        "goldfish girl wants to become human after a five year old boy rescues her from a jar by the sea",
        _ids(313),
        "Ponyo",
        2008,
    ),
    PlotQuery(
        "a pop idol quits her group to become an actress, gets stalkd and loses her grip on what is real",
        _ids(839),
        "Perfect Blue",
        1998,
    ),
    PlotQuery(
        "runaway boy in endlessly rainy tokyo meets a girl who can make the sun come out by praying",
        _ids(269235),
        "Weathering with You",
        2019,
    ),
    PlotQuery(
        "a student falls in love with a man who can turn into a wolf; after he dies she raises their two "
        "kids alone in the countryside",
        _ids(28440),
        "Wolf Children",
        2012,
    ),
    PlotQuery(
        "high school girl discovers she can jump back in time and wastes it on silly things like redoing "
        "karaoke",
        _ids(242),
        "The Girl Who Leapt Through Time",
        2006,
    ),
    PlotQuery(
        "math whiz pretends to be a girl's fiance at her huge family reunion while a rogue ai takes over a "
        "virtual world everyone uses",
        _ids(1905),
        "Summer Wars",
        2009,
    ),
    PlotQuery(
        "three short stories about a boy and a girl growing apart over distance and years, cherry blossoms "
        "and trains",
        _ids(927),
        "5 Centimeters per Second",
        2007,
    ),
    PlotQuery(
        "lonely teenage professional shogi player who lives alone and gets taken in by three sisters",
        _ids(147068),
        "March Comes in Like a Lion",
        2016,
    ),
    PlotQuery(
        "a redhead delinquent joins the basketball team to impress a girl",
        _ids(1608, 324720, 3732, 3733, 3734),
        "Slam Dunk",
        1993,
    ),
    PlotQuery(
        "japanese figure skater about to retire gets coached by his russian idol",
        _ids(174998),
        "Yuri!!! on Ice",
        2016,
    ),
    PlotQuery(
        "a yellow octopus-like creature who blew up part of the moon becomes the teacher of a class of "
        "misfits who must kill him before graduation",
        _ids(106818, 170762, 186099),
        "Assassination Classroom",
        2015,
    ),
    PlotQuery(
        "kids in an idyllic orphanage find out they are being raised as food for demons and plan an escape",
        _ids(243916),
        "The Promised Neverland",
        2019,
    ),
    PlotQuery(
        "an alien parasite fails to take over a teenager's brain and ends up living in his right hand",
        _ids(88433),
        "Parasyte: The Maxim",
        2014,
    ),
    PlotQuery(
        "walrus cab driver gets caught up in the case of a missing girl, everyone is an animal, crime "
        "mystery",
        _ids(325285),
        "Odd Taxi",
        2021,
    ),
    PlotQuery(
        "immortal gem people fight raiders from the moon and the most fragile one wants to be useful",
        _ids(214799),
        "Land of the Lustrous",
        2017,
    ),
    PlotQuery(
        "two girls ride a kettenkrad through the ruins of a dead city after the end of the world",
        _ids(218707),
        "Girls' Last Tour",
        2017,
    ),
    PlotQuery(
        "space debris collectors in orbit in the 2070s, a workplace drama about an astronaut who dreams of "
        "his own ship",
        _ids(2734),
        "Planetes",
        2003,
    ),
    PlotQuery(
        "college student relives his first two years over and over, picking a different club each time, "
        "very fast talking",
        _ids(4019),
        "The Tatami Galaxy",
        2010,
    ),
    PlotQuery(
        "energy-conserving high school boy joins the classics club and solves small everyday mysteries "
        "because a curious girl asks him to",
        _ids(27364),
        "Hyouka",
        2012,
    ),
    PlotQuery(
        "high school concert band aiming for the national competition, the girl plays a low brass instrument",
        _ids(115908),
        "Sound! Euphonium",
        2015,
    ),
    PlotQuery(
        "girl with half of a giant pair of scissors transfers to a school ruled by a student council with "
        "power-giving uniforms to find her father's killer",
        _ids(72941),
        "Kill la Kill",
        2013,
    ),
)
